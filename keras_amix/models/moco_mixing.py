"""How MoCo v2 mixes: one small serialisable strategy object per method.

`MoCoV2(mixer=...)` takes one of these, or a name that stands for one:

- `CrossView(mixer)`: a class-level mixer ("mixup", "cutmix", ... or a
  `Mixer`) in the paper's cross-view pipeline (§3.1, eq. 4).
- `IMix(alpha)`: i-Mix, whose loss replaces MoCo's infoNCE.
- `UnMix(alpha)`: Un-Mix, MixUp and CutMix of view 1 with the reversed batch.
- `InterIntra(alpha)`: Inter-Intra (C), MixUp inside an ODC cluster, CutMix
  across clusters, in the cross-view pipeline.
- `PuzzleMixC(alpha, **puzzlemix_kwargs)`: PuzzleMix (C), PuzzleMix in the
  cross-view pipeline with a saliency from the ODC pseudo labels.
- `MoCHi(num_hard, num_mix, num_query_mix)`: synthetic hard negatives added
  to MoCo's infoNCE (no mixup term).

A strategy owns its hyper-parameters and its loss; it is stateless and draws
its randomness from the model's seed generator (`build(model)`), so the
model's saved generator state resumes it. The model calls `nce_loss` (MoCo's
eq. 2, or the strategy's replacement) and `mix_loss` (the unweighted mixup
term); both take the model for its encoders, queue and temperature.

`mix_params` (tests) fixes the mixing parameters of one step: for
`CrossView` its mixer's `sample_params` dict ({"lam", "perm", maybe "mask"});
for `IMix` {"lam" (scalar), "perm"}; for `UnMix` {"lam" (scalar), "mask"
(B, H, W, 1) weight of the CutMix first image, "cutmix_lam" (B,)}; for
`InterIntra` {"lam", "perm", "mask", "cutmix_lam"}.
"""

import numbers

import keras
from keras import ops

from keras_amix import losses as losses_lib
from keras_amix import mixers as mixers_lib
from keras_amix.losses.contrastive import l2_normalize
from keras_amix.mixers.primitives import mix_images, sample_lambda, sample_permutation
from keras_amix.training.backend import input_gradient


def _cross_entropy_at(logits, index):
    """-log softmax(logits)[b, index[b]] for (B, N) logits and (B,) int index."""
    picked = ops.take_along_axis(logits, ops.reshape(index, (-1, 1)), axis=1)[:, 0]
    return ops.logsumexp(logits, axis=-1) - picked


def _cross_view_term(model, mixer, view1, view2, k2, queue, params):
    """Eq. 4 of the cross-view pipeline: `mixer` mixes image i of view 1 with
    image perm(i) of view 2 by `params`; positives k(x_i^2) and k(x_perm(i)^1)."""
    perm = params["perm"]
    x_mix = mixer.mix_images(view1, ops.take(view2, perm, axis=0), params)
    q_mix = model.query_embedding(x_mix, training=True)
    k1 = model.key_embedding(view1, training=True)
    return ops.mean(losses_lib.mixup_info_nce(
        q_mix, k2, ops.take(k1, perm, axis=0), queue, params["lam"],
        model.temperature, normalize=False))


def _check_alpha(name, alpha, arg="alpha"):
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"{name} `{arg}` must be > 0; received {arg}={alpha!r}.")
    return float(alpha)


class MoCoMixing:
    """Base strategy: plain MoCo v2 (eq. 2, no mixup term). A strategy object
    belongs to the one model that built it.

    Subclasses set `name` and override `mix_loss` (a mixup term) and/or
    `nce_loss` (MoCo's term). Class attributes:

    - `needs_clusters`: the strategy reads the batch's ODC labels (the model
      then needs `num_samples` and sample ids).
    - `replaces_nce`: MoCo's eq. 2 is not computed (its value is 0): the
      strategy's `mix_loss` is the whole loss (i-Mix).
    - `has_mix_term`: whether `mix_loss` contributes (MoCHi's does not).
    """

    name = "mocov2"
    needs_clusters = False
    replaces_nce = False
    has_mix_term = True

    def build(self, model):
        """Binds the strategy's random draws to `model.seed_generator`."""
        self.seed_generator = model.seed_generator

    def layers(self):
        """Keras layers the model must track (mixers: their seed state)."""
        return []

    def nce_loss(self, model, q1, k2, queue):
        """MoCo's eq. 2, mean over the batch."""
        return ops.mean(losses_lib.info_nce(q1, k2, queue, model.temperature, normalize=False))

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        return ops.zeros((), "float32")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_amix")
class CrossView(MoCoMixing):
    """A class-level mixer in the cross-view pipeline (paper §3.1, eq. 4).

    x_mix = h(x_i^1, x_perm(i)^2, λ); positives: the key of the *other* view of
    each source (k(x_i^2) for i, k(x_perm(i)^1) for perm(i)).

    Args:
        mixer: a mixer name ("mixup", "cutmix", ...) or a `Mixer` that mixes
            input images without saliency.
        **mixer_kwargs: the mixer's arguments when given by name (e.g.
            `alpha=1.0`).
    """

    def __init__(self, mixer, **mixer_kwargs):
        if isinstance(mixer, dict):  # a serialised Mixer (from_config)
            mixer = keras.saving.deserialize_keras_object(mixer)
        if isinstance(mixer, mixers_lib.Mixer):
            if mixer_kwargs:
                raise ValueError(
                    "`mixer_kwargs` apply to a mixer given by name; received a Mixer "
                    f"object with mixer_kwargs={mixer_kwargs}."
                )
        elif not isinstance(mixer, str):
            raise ValueError(f"`mixer` must be a mixer name or a Mixer; received {mixer!r}.")
        self.mixer = mixer
        self.mixer_kwargs = dict(mixer_kwargs)
        self._layer = mixer if isinstance(mixer, mixers_lib.Mixer) else None
        if self._layer is not None:
            self._check(self._layer)

    @staticmethod
    def _check(layer):
        if layer.requires_saliency or layer.mixes_hidden:
            raise ValueError(
                "The cross-view pipeline mixes input images without saliency; "
                f"received mixer={layer.name!r}."
            )

    @property
    def name(self):
        return self.mixer if isinstance(self.mixer, str) else self.mixer.name

    @property
    def layer(self):
        """The `Mixer` that mixes (built from the name by `build`)."""
        return self._layer

    def build(self, model):
        super().build(model)
        if isinstance(self.mixer, str):  # by name: a mixer on the model's random stream
            self._layer = mixers_lib.get(self.mixer, seed=model.seed_generator,
                                         **self.mixer_kwargs)
            self._check(self._layer)

    def layers(self):
        return [self._layer]

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        if params is None:
            params = self._layer.sample_params(view1)
        return _cross_view_term(model, self._layer, view1, view2, k2, queue, params)

    def get_config(self):
        mixer = self.mixer
        if isinstance(mixer, mixers_lib.Mixer):
            mixer = keras.saving.serialize_keras_object(mixer)
        return {"mixer": mixer, **self.mixer_kwargs}


@keras.saving.register_keras_serializable(package="keras_amix")
class IMix(MoCoMixing):
    """i-Mix (Lee et al. 2021): view 1 MixUp-ed with its own pairing, virtual
    labels over the batch's view-2 keys; logits q_mix · [k_batch; queue]ᵀ / τ
    (B × (B + K)); loss λ CE(logits, i) + (1 − λ) CE(logits, perm(i)). It
    replaces eq. 2.

    Args:
        alpha: float > 0, Beta(α, α) of λ (1.0).
    """

    name = "imix"
    replaces_nce = True

    def __init__(self, alpha=1.0):
        self.alpha = _check_alpha("i-Mix", alpha)

    def nce_loss(self, model, q1, k2, queue):
        return ops.zeros((), "float32")

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        batch = ops.shape(view1)[0]
        if params is None:
            params = {"lam": sample_lambda(self.seed_generator, self.alpha, ()),
                      "perm": sample_permutation(self.seed_generator, batch)}
        lam = ops.cast(params["lam"], "float32")
        perm = params["perm"]
        x_mix = mix_images(view1, ops.take(view1, perm, axis=0), lam)
        q_mix = model.query_embedding(x_mix, training=True)
        logits = ops.matmul(q_mix, ops.transpose(ops.concatenate([k2, queue], axis=0)))
        logits = logits / model.temperature
        own = ops.arange(batch, dtype="int32")
        return ops.mean(lam * _cross_entropy_at(logits, own)
                        + (1.0 - lam) * _cross_entropy_at(logits, ops.cast(perm, "int32")))

    def get_config(self):
        return {"alpha": self.alpha}


class _MixUpAndCutMix(MoCoMixing):
    """A strategy that draws a MixUp λ ~ Beta(α, α) and CutMix boxes of
    λ ~ Beta(`cutmix_alpha`, `cutmix_alpha`): α unless a subclass gives its own."""

    def __init__(self, alpha=1.0):
        self.alpha = _check_alpha(type(self).__name__, alpha)

    @property
    def cutmix_alpha(self):
        return self.alpha

    def build(self, model):
        super().build(model)
        self._cutmix = mixers_lib.get("cutmix", alpha=self.cutmix_alpha,
                                      seed=model.seed_generator)

    def layers(self):
        return [self._cutmix]

    def get_config(self):
        return {"alpha": self.alpha}


@keras.saving.register_keras_serializable(package="keras_amix")
class UnMix(_MixUpAndCutMix):
    """Un-Mix (Shen et al. 2022): view 1 mixed with the reversed batch, by MixUp
    and by CutMix; the mean of the two eq.-4 terms with positives (k_i,
    k_reversed(i)) of view 2.

    Args:
        alpha: float > 0, Beta(α, α) of both λ (1.0).
    """

    name = "unmix"

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        batch = ops.shape(view1)[0]
        reverse = ops.flip(ops.arange(batch, dtype="int32"), axis=0)
        reversed_view = ops.take(view1, reverse, axis=0)
        k_rev = ops.take(k2, reverse, axis=0)
        if params is None:
            lam = sample_lambda(self.seed_generator, self.alpha, ())
            cut = self._cutmix.sample_params(view1)
            params = {"lam": lam, "mask": cut["mask"], "cutmix_lam": cut["lam"]}
        lam = ops.cast(params["lam"], "float32")
        terms = []
        for x_mix, weight in ((mix_images(view1, reversed_view, lam), lam),
                              (mix_images(view1, reversed_view, params["mask"]),
                               params["cutmix_lam"])):
            q_mix = model.query_embedding(x_mix, training=True)
            terms.append(ops.mean(losses_lib.mixup_info_nce(
                q_mix, k2, k_rev, queue, weight, model.temperature, normalize=False)))
        return 0.5 * (terms[0] + terms[1])


@keras.saving.register_keras_serializable(package="keras_amix")
class InterIntra(_MixUpAndCutMix):
    """Inter-Intra (C) (paper Table 4, Fig. 2c): the cross-view pipeline with
    MixUp for the pairs whose ODC clusters agree and CutMix for the others;
    eq. 4 with each pair's λ (the CutMix box area for CutMix pairs). Fig. 2c
    finds MixUp with a large α within a class and CutMix with a small α across
    classes best; the paper gives no values: 2.0 (AMix's α) and 0.2 (CutMix's
    default).

    Args:
        alpha: float > 0, Beta(α, α) of the MixUp λ within a cluster (2.0).
        cutmix_alpha: float > 0, Beta(α, α) of the CutMix boxes across (0.2).
    """

    name = "inter_intra"
    needs_clusters = True

    def __init__(self, alpha=2.0, cutmix_alpha=0.2):
        super().__init__(alpha)
        self._cutmix_alpha = _check_alpha(type(self).__name__, cutmix_alpha, "cutmix_alpha")

    @property
    def cutmix_alpha(self):
        return self._cutmix_alpha

    def get_config(self):
        return {"alpha": self.alpha, "cutmix_alpha": self.cutmix_alpha}

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        if params is None:
            cut = self._cutmix.sample_params(view1)
            params = {"lam": sample_lambda(self.seed_generator, self.alpha, ()),
                      "perm": cut["perm"], "mask": cut["mask"], "cutmix_lam": cut["lam"]}
        perm = params["perm"]
        same = ops.equal(clusters, ops.take(clusters, perm, axis=0))
        lam_mix = ops.cast(params["lam"], "float32")
        weight = ops.where(same[:, None, None, None], lam_mix,
                           ops.cast(params["mask"], "float32"))
        lam = ops.where(same, lam_mix, ops.cast(params["cutmix_lam"], "float32"))
        x_mix = mix_images(view1, ops.take(view2, perm, axis=0), weight)
        q_mix = model.query_embedding(x_mix, training=True)
        k1 = model.key_embedding(view1, training=True)
        return ops.mean(losses_lib.mixup_info_nce(
            q_mix, k2, ops.take(k1, perm, axis=0), queue, lam, model.temperature,
            normalize=False))


@keras.saving.register_keras_serializable(package="keras_amix")
class MoCHi(MoCoMixing):
    """MoCHi (Kalantidis et al. 2020): per query, its `num_hard` hardest queue
    negatives; `num_mix` synthetic negatives mix random pairs of them (weight
    α ~ U(0, 1)), `num_query_mix` mix the query with one of them (query weight
    β ~ U(0, 0.5)); all L2-normalised, stop-gradient, appended to *that
    query's* negatives in eq. 2. No mixup term.

    Args:
        num_hard: int >= 1 (1024).
        num_mix: int >= 0 (1024).
        num_query_mix: int >= 0 (256).
    """

    name = "mochi"
    has_mix_term = False

    def __init__(self, num_hard=1024, num_mix=1024, num_query_mix=256):
        sizes = dict(num_hard=num_hard, num_mix=num_mix, num_query_mix=num_query_mix)
        for arg, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"MoCHi `{arg}` must be an int >= 0; received {arg}={value!r}.")
        if num_hard < 1:
            raise ValueError(f"MoCHi `num_hard` must be >= 1; received num_hard={num_hard!r}.")
        self.num_hard, self.num_mix, self.num_query_mix = (int(v) for v in sizes.values())

    def nce_loss(self, model, q1, k2, queue):
        return ops.mean(self.loss(model, q1, k2, queue, self.hard_negatives(model, q1, queue)))

    def hard_negatives(self, model, q, queue):
        """The synthetic hard negatives per query, (B, num_mix + num_query_mix, d), unit norm."""
        q = ops.stop_gradient(ops.cast(q, "float32"))
        batch = ops.shape(q)[0]
        n = min(self.num_hard, model.queue_size)
        _, hard_idx = ops.top_k(ops.matmul(q, ops.transpose(queue)), k=n)  # (B, N)
        seed = self.seed_generator

        def hard_keys(count):
            # Pick among each query's N hardest by index, then gather those
            # queue rows: never materialises the (B, N, d) hard set.
            pick = keras.random.randint((batch, count), 0, n, seed=seed)
            return ops.take(queue, ops.take_along_axis(hard_idx, pick, axis=1), axis=0)

        parts = []
        if self.num_mix:
            h_i, h_j = hard_keys(self.num_mix), hard_keys(self.num_mix)
            alpha = keras.random.uniform((batch, self.num_mix, 1), seed=seed)
            parts.append(mix_images(h_i, h_j, alpha))
        if self.num_query_mix:
            beta = 0.5 * keras.random.uniform((batch, self.num_query_mix, 1), seed=seed)
            parts.append(mix_images(q[:, None, :], hard_keys(self.num_query_mix), beta))
        if not parts:
            return ops.zeros((batch, 0, model.projection_dim), "float32")
        return ops.stop_gradient(l2_normalize(ops.concatenate(parts, axis=1)))

    @staticmethod
    def loss(model, q, k_pos, queue, synthetic):
        """Per-query (B,) infoNCE with `synthetic[b]` appended to query b's negatives."""
        pos = ops.sum(q * k_pos, axis=-1, keepdims=True)
        neg = ops.matmul(q, ops.transpose(queue))
        own = ops.einsum("bd,bsd->bs", q, synthetic)  # (B, S)
        logits = ops.concatenate([pos, neg, own], axis=-1) / model.temperature
        return ops.logsumexp(logits, axis=-1) - logits[:, 0]

    def get_config(self):
        return {"num_hard": self.num_hard, "num_mix": self.num_mix,
                "num_query_mix": self.num_query_mix}


@keras.saving.register_keras_serializable(package="keras_amix")
class PuzzleMixC(MoCoMixing):
    """PuzzleMix (C) (paper Table 4): PuzzleMix in the cross-view pipeline, its
    saliency from the ODC pseudo labels. Image i of view 1 is mixed with image
    perm(i) of view 2 by PuzzleMix's saliency-guided block mask and transport;
    eq. 4 with λ the mask's mean, positives as `CrossView`.

    The saliency of each view is |∂ CE / ∂x| summed over channels, with the CE
    of a cluster classifier on the sample's ODC label; the classifier is ODC's
    own centroids (logits = q · centroidsᵀ / τ, the query encoder in inference
    mode), so the strategy holds no weights. (The official code reads a
    trained cluster head instead; MoCo v2 has none, and the centroids are the
    clusters' prototypes.)

    Args:
        alpha: float > 0, Beta(α, α) of λ (None: PuzzleMix's default).
        **puzzlemix_kwargs: more `PuzzleMix` arguments (`grid_size`,
            `transport`, `smoothness`, ...).
    """

    name = "puzzlemix_c"
    needs_clusters = True

    def __init__(self, alpha=None, **puzzlemix_kwargs):
        if alpha is not None:
            alpha = _check_alpha("PuzzleMix (C)", alpha)
        self.alpha = alpha
        self.puzzlemix_kwargs = dict(puzzlemix_kwargs)

    def build(self, model):
        super().build(model)
        self._puzzle = mixers_lib.get("puzzlemix", alpha=self.alpha, seed=model.seed_generator,
                                      **self.puzzlemix_kwargs)

    def layers(self):
        return [self._puzzle]

    def saliency(self, model, images, clusters):
        """|∂ CE(q(x) · centroidsᵀ / τ, cluster) / ∂x| summed over channels, (B, H, W, 1)."""
        centroids = ops.stop_gradient(ops.convert_to_tensor(model.odc.centroids))

        def loss_of(x):
            logits = ops.matmul(model.query_embedding(x, training=False),
                                ops.transpose(centroids)) / model.temperature
            return ops.sum(_cross_entropy_at(logits, clusters))

        grad = input_gradient(loss_of, images)
        return ops.sum(ops.abs(grad), axis=-1, keepdims=True)

    def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
        if params is None:
            params = self._puzzle.sample_params(
                view1, saliency=self.saliency(model, view1, clusters),
                saliency_b_unpaired=self.saliency(model, view2, clusters))
        return _cross_view_term(model, self._puzzle, view1, view2, k2, queue, params)

    def get_config(self):
        return {"alpha": self.alpha, **self.puzzlemix_kwargs}


# The methods MoCoV2 implements itself, by name.
STRATEGIES = {"imix": IMix, "unmix": UnMix, "inter_intra": InterIntra,
              "puzzlemix_c": PuzzleMixC, "mochi": MoCHi}


def get(mixer, mixer_kwargs=None):
    """The strategy of `MoCoV2(mixer=..., mixer_kwargs=...)`: None (plain MoCo
    v2), a `MoCoMixing`, one of `STRATEGIES`' names, or a class-level mixer
    name / `Mixer` (→ `CrossView`). `mixer_kwargs` are the constructor
    arguments of a strategy or mixer given by name."""
    mixer_kwargs = dict(mixer_kwargs or {})
    if mixer is None:
        if mixer_kwargs:
            raise ValueError(f"`mixer_kwargs` need a mixer; received mixer=None with "
                             f"mixer_kwargs={mixer_kwargs}.")
        return None
    if isinstance(mixer, MoCoMixing):
        if mixer_kwargs:
            raise ValueError("`mixer_kwargs` apply to a mixer given by name; received a "
                             f"{type(mixer).__name__} with mixer_kwargs={mixer_kwargs}.")
        return mixer
    if isinstance(mixer, str) and mixer.lower() in STRATEGIES:
        cls = STRATEGIES[mixer.lower()]
        try:
            return cls(**mixer_kwargs)
        except TypeError:
            raise ValueError(
                f"`mixer_kwargs` for {mixer.lower()!r} accepts the arguments of "
                f"{cls.__name__}; received {sorted(mixer_kwargs)}."
            ) from None
    if isinstance(mixer, (str, mixers_lib.Mixer)):
        return CrossView(mixer, **mixer_kwargs)
    raise ValueError(
        f"`mixer` must be None, a mixer name, a Mixer, a MoCoMixing or one of "
        f"{tuple(STRATEGIES)}; received mixer={mixer!r}."
    )
