"""Mix Block classification losses selectable by name (paper Tables 1 and 7).

Names: ``"ce"`` (mixup CE), ``"pbce"`` (parametric binary CE), ``"bce"``
(non-parametric binary CE, eq. 6), ``"infonce"`` (mixup infoNCE, eq. 4), and
sums of them with optional weights: ``"ce+bce"`` (AMix-C), ``"infonce+bce"``
(AMix-I), ``"ce+0.5*bce"``.

Every term receives the same keyword inputs; each uses the ones it needs:

- ``lam``: scalar or ``(B,)``, the weight of the first sample (all terms);
- ``logits``, ``labels_a``, ``labels_b``: ``"ce"`` and ``"pbce"``;
- ``z_mix``, ``z_a``, ``z_b``: embeddings of the mixed image and of the two
  sources (keys), for ``"bce"`` and ``"infonce"``;
- ``queue`` ``(K, d)``: ``"infonce"``;
- ``temperature`` (default 0.2): ``"bce"`` and ``"infonce"``.
"""

import re

from keras_amix.losses.classification import mixup_cross_entropy
from keras_amix.losses.classification import parametric_binary_cross_entropy
from keras_amix.losses.contrastive import binary_cross_entropy_embeddings
from keras_amix.losses.contrastive import mixup_info_nce

_TERMS = {
    "ce": (
        ("logits", "labels_a", "labels_b", "lam"),
        lambda i: mixup_cross_entropy(i["logits"], i["labels_a"], i["labels_b"], i["lam"]),
    ),
    "pbce": (
        ("logits", "labels_a", "labels_b", "lam"),
        lambda i: parametric_binary_cross_entropy(
            i["logits"], i["labels_a"], i["labels_b"], i["lam"]
        ),
    ),
    "bce": (
        ("z_mix", "z_a", "z_b", "lam"),
        lambda i: binary_cross_entropy_embeddings(
            i["z_mix"], i["z_a"], i["z_b"], i["lam"], temperature=i.get("temperature", 0.2)
        ),
    ),
    "infonce": (
        ("z_mix", "z_a", "z_b", "queue", "lam"),
        lambda i: mixup_info_nce(
            i["z_mix"], i["z_a"], i["z_b"], i["queue"], i["lam"],
            temperature=i.get("temperature", 0.2),
        ),
    ),
}

_INPUTS = ("lam", "logits", "labels_a", "labels_b", "z_mix", "z_a", "z_b", "queue", "temperature")
_TERM_RE = re.compile(r"^(?:(?P<weight>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*\s*)?(?P<name>[a-z]+)$")


def available():
    """Names of the single loss terms."""
    return sorted(_TERMS)


def parse(spec, weights=None):
    """``"ce+0.5*bce"`` -> ``(("ce", 1.0), ("bce", 0.5))``.

    Args:
        spec: a ``+``-separated string of names with optional ``w*`` factors.
        weights: optional dict name -> weight overriding the factors.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"`spec` must be a non-empty string like 'ce+bce'; received spec={spec!r}."
        )
    terms = []
    for part in spec.split("+"):
        match = _TERM_RE.match(part.strip().lower())
        if match is None or match.group("name") not in _TERMS:
            raise ValueError(
                f"Unknown loss term {part.strip()!r} in spec={spec!r}; allowed names are "
                f"{available()}, optionally weighted as '0.5*name' and joined by '+'."
            )
        name = match.group("name")
        if name in dict(terms):
            raise ValueError(f"Loss term {name!r} appears twice in spec={spec!r}.")
        weight = float(match.group("weight")) if match.group("weight") else 1.0
        terms.append((name, weight))
    if weights:
        unknown = set(weights) - set(dict(terms))
        if unknown:
            raise ValueError(
                f"`weights` names {sorted(unknown)} that are not in spec={spec!r}."
            )
        terms = [(name, float(weights.get(name, w))) for name, w in terms]
    return tuple(terms)


class MixupLoss:
    """A weighted sum of named Mix Block loss terms.

    Args:
        spec: e.g. ``"ce"``, ``"ce+bce"``, ``"infonce+0.5*bce"``.
        weights: optional dict overriding the per-term weights.

    Call arguments:
        keyword inputs as listed in this module's docstring.

    Returns:
        ``(B,)`` float32 per-sample losses (reduce with `keras.ops.mean`).

    Example:

    >>> loss = get("ce+bce")
    >>> per_sample = loss(lam=lam, logits=logits, labels_a=y, labels_b=y[perm],
    ...                   z_mix=z_mix, z_a=z, z_b=z[perm])

    Reference: AMix paper section 3.3, Tables 1 and 7.
    """

    def __init__(self, spec, weights=None):
        self.spec = spec
        self.terms_and_weights = parse(spec, weights)

    @property
    def required_inputs(self):
        names = []
        for term, _ in self.terms_and_weights:
            for name in _TERMS[term][0]:
                if name not in names:
                    names.append(name)
        return tuple(names)

    def terms(self, **inputs):
        """The unweighted per-sample loss of each term, as a dict name -> ``(B,)``."""
        unknown = set(inputs) - set(_INPUTS)
        if unknown:
            raise ValueError(f"Unknown loss inputs {sorted(unknown)}; allowed: {list(_INPUTS)}.")
        out = {}
        for term, _ in self.terms_and_weights:
            needed, fn = _TERMS[term]
            missing = [n for n in needed if inputs.get(n) is None]
            if missing:
                raise ValueError(
                    f"Loss term {term!r} (from spec={self.spec!r}) needs inputs {missing}."
                )
            out[term] = fn(inputs)
        return out

    def __call__(self, **inputs):
        values = self.terms(**inputs)
        total = None
        for term, weight in self.terms_and_weights:
            part = weight * values[term]
            total = part if total is None else total + part
        return total

    def get_config(self):
        return {"spec": self.spec, "weights": dict(self.terms_and_weights)}


def get(spec, weights=None):
    """Resolve a name or ``"a+b"`` combination into a `MixupLoss`."""
    if isinstance(spec, MixupLoss):
        return spec
    return MixupLoss(spec, weights=weights)


def combined(spec, weights=None, **inputs):
    """``get(spec, weights)(**inputs)``: the weighted per-sample loss ``(B,)``."""
    return get(spec, weights)(**inputs)
