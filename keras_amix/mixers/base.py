"""Shared sampling helpers, the mixer registry and the `Mixer` base class.

Everything here is `keras.ops` / `keras.random` only, so the mixers run on the
TensorFlow, JAX and torch backends, eagerly and inside compiled functions, and
inside `tf.data.Dataset.map` (on JAX and torch through
`keras_amix.data.mixer_bridge`).

The helpers are small pure functions (timm's `mixup.py` style):

- `sample_lambda`: λ ~ Beta(α, α) from two Gamma draws.
- `sample_permutation`: the pairing `perm` (optionally without fixed points).
- `sample_boxes` / `box_mask`: CutMix boxes and their exact λ.
- `one_hot_labels`: integer or soft labels to float one-hot rows.
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_amix.mixers import checks
# The mixing primitives live in primitives.py; re-exported here for compatibility.
from keras_amix.mixers.primitives import cast_like  # noqa: F401
from keras_amix.mixers.primitives import is_integer_dtype
from keras_amix.mixers.primitives import mix_images as _mix_images
from keras_amix.mixers.primitives import mix_labels as _mix_labels
from keras_amix.mixers.primitives import sample_lambda  # noqa: F401
from keras_amix.mixers.primitives import sample_permutation  # noqa: F401

_REGISTRY = {}


def register(name):
    """Class decorator: registers a `Mixer` subclass under `name`.

    The class is also registered for Keras serialization
    (`package="keras_amix"`) and must set the class attribute
    `default_alpha`. A new mixer is one file plus this decorator.
    """

    def decorator(cls):
        key = name.lower()
        alpha = getattr(cls, "default_alpha", None)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(
                f"A mixer class must set `default_alpha`, a number > 0 (the "
                f"default of `alpha`); received {cls.__name__}.default_alpha={alpha!r}."
            )
        if key in _REGISTRY and _REGISTRY[key].__qualname__ != cls.__qualname__:
            raise ValueError(
                f"A mixer named {key!r} is already registered "
                f"({_REGISTRY[key].__name__}); received {cls.__name__}."
            )
        cls = keras.saving.register_keras_serializable(package="keras_amix")(cls)
        _REGISTRY[key] = cls
        return cls

    return decorator


def available():
    """Sorted names accepted by `get`."""
    return sorted(_REGISTRY)


def get(name, **kwargs):
    """Returns a new mixer given its registered name (or a `Mixer` unchanged).

    Args:
        name: a registered name (see `available()`), case-insensitive, or a
            `Mixer` instance (returned as is; `kwargs` must then be empty).
        **kwargs: constructor arguments of the mixer, e.g. `alpha=0.2`.
    """
    if isinstance(name, Mixer):
        if kwargs:
            raise ValueError(
                "Keyword arguments cannot be applied to an existing Mixer "
                f"instance; received kwargs={sorted(kwargs)}."
            )
        return name
    return get_class(name)(**kwargs)


def get_class(name):
    """The `Mixer` subclass registered under `name` (case-insensitive).

    Its class attributes describe the method before any instance exists, e.g.
    `get_class("cutmix").default_alpha`.
    """
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(
            f"Unknown mixer name={name!r}. Available mixers: {available()}."
        )
    return _REGISTRY[name.lower()]


# ---------------------------------------------------------------------------
# Pure helpers.
# ---------------------------------------------------------------------------


def box_mask(y1, x1, y2, x2, height, width):
    """Mask (B, H, W, 1) float32: 0 inside the box [y1, y2) × [x1, x2), else 1.

    The mask is the weight of the first image (the box is pasted from the
    second one). Box coordinates are int tensors of shape (B,).
    """
    rows = ops.arange(height, dtype="int32")[None, :]
    cols = ops.arange(width, dtype="int32")[None, :]
    y1, x1, y2, x2 = (ops.cast(v, "int32")[:, None] for v in (y1, x1, y2, x2))
    in_rows = ops.logical_and(rows >= y1, rows < y2)
    in_cols = ops.logical_and(cols >= x1, cols < x2)
    inside = ops.logical_and(in_rows[:, :, None], in_cols[:, None, :])
    return ops.cast(ops.logical_not(inside), "float32")[..., None]


def sample_boxes(seed_gen, lam, height, width, centers=None):
    """CutMix boxes of area (1 − λ)·H·W, clipped to the image.

    The box side is floor(H·√(1−λ)) × floor(W·√(1−λ)); its centre is uniform
    over the pixels (or `centers`), the box is clipped to the image and λ is
    recomputed from the clipped area.

    Args:
        seed_gen: a `keras.random.SeedGenerator`.
        lam: (B,) float target λ (weight of the first image).
        height, width: image size.
        centers: optional `(cy, cx)` int tensors of shape (B,); uniform if None.

    Returns:
        `(mask, lam, box)`: mask (B, H, W, 1) float32 (weight of the first
        image), the exact λ (B,) = 1 − clipped area / (H·W) = mask mean, and
        box (B, 4) int32 `[y1, x1, y2, x2]` (end exclusive).
    """
    lam = ops.cast(lam, "float32")
    ratio = ops.sqrt(ops.clip(1.0 - lam, 0.0, 1.0))
    h = ops.cast(height, "float32")
    w = ops.cast(width, "float32")
    # The small epsilon keeps floor(4 * 0.5) == 2 under float32 rounding.
    cut_h = ops.cast(ops.floor(h * ratio + 1e-4), "int32")
    cut_w = ops.cast(ops.floor(w * ratio + 1e-4), "int32")
    if centers is None:
        batch = ops.shape(lam)[0]
        uy = keras.random.uniform((batch,), seed=seed_gen)
        ux = keras.random.uniform((batch,), seed=seed_gen)
        cy = ops.minimum(ops.cast(ops.floor(uy * h), "int32"), height - 1)
        cx = ops.minimum(ops.cast(ops.floor(ux * w), "int32"), width - 1)
    else:
        cy, cx = (ops.cast(c, "int32") for c in centers)
    top = cy - cut_h // 2
    left = cx - cut_w // 2
    y1 = ops.clip(top, 0, height)
    y2 = ops.clip(top + cut_h, 0, height)
    x1 = ops.clip(left, 0, width)
    x2 = ops.clip(left + cut_w, 0, width)
    mask = box_mask(y1, x1, y2, x2, height, width)
    area = ops.cast((y2 - y1) * (x2 - x1), "float32")
    exact_lam = 1.0 - area / (h * w)
    box = ops.stack([y1, x1, y2, x2], axis=1)
    return mask, exact_lam, box


# Machine epsilon of the float dtypes labels may come in.
_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def label_sum_tolerance(dtype, num_classes):
    """Allowed |row sum − 1| of soft labels of `dtype` with K = `num_classes`.

    Rows are summed in float32: rounding each entry to `dtype` moves the sum
    by at most half an ulp of `dtype` (the entries are ≥ 0 and sum to 1) and
    the float32 summation by at most K ulps of float32; twice both, so
    4·eps(dtype) + 2·K·eps(float32) (float32, K = 10: 2.9e-6; bfloat16: 0.031).
    """
    eps = _EPS.get(keras.backend.standardize_dtype(dtype), _EPS["float32"])
    return 4.0 * eps + 2.0 * num_classes * _EPS["float32"]


def _format_tol(tol):
    if isinstance(tol, float):
        return f"{tol:.2g}"
    return "4·eps(dtype) + 2·K·eps(float32)"


def check_integer_labels(labels, num_classes):
    """ValueError unless every integer label lies in [0, num_classes); returns `labels`.

    Eagerly at once; inside compiled functions through `checks.raise_if`.
    """
    bad = ops.logical_or(labels < 0, labels >= num_classes)
    flat = ops.reshape(ops.cast(labels, "int32"), (-1,))
    return checks.raise_if(
        ops.any(bad),
        f"Integer `labels` must lie in [0, num_classes={num_classes}) (no -1 "
        "'unlabelled' marks).",
        lambda count, low, high: (
            f"Received {int(count)} label(s) out of range (min {int(low)}, max {int(high)})."
        ),
        {"count": ops.sum(ops.cast(bad, "int32")), "low": ops.min(flat), "high": ops.max(flat)},
        labels,
    )


def check_soft_labels(labels):
    """ValueError unless each row is ≥ 0 and sums to 1 (`label_sum_tolerance`); returns `labels`."""
    num_classes = labels.shape[-1]
    if num_classes is None:
        num_classes = ops.cast(ops.shape(labels)[-1], "float32")
    tol = label_sum_tolerance(labels.dtype, num_classes)
    y = ops.cast(labels, "float32")
    sums = ops.sum(y, axis=-1)
    # Written as "not (good)" so that NaN entries count as bad.
    bad_rows = ops.logical_or(
        ops.logical_not(ops.abs(sums - 1.0) <= tol),
        ops.logical_not(ops.all(y >= -tol, axis=-1)),
    )
    first = ops.argmax(ops.cast(bad_rows, "int32"))
    return checks.raise_if(
        ops.any(bad_rows),
        "One-hot / soft `labels` must have rows of non-negative values that "
        f"sum to 1 (|sum - 1| <= {_format_tol(tol)} for dtype "
        f"{keras.backend.standardize_dtype(labels.dtype)}).",
        lambda count, index, row_sum, row: (
            f"Received {int(count)} bad row(s); e.g. row {int(index)} sums to "
            f"{float(row_sum):.6g}: {np.round(row[:10], 6).tolist()}"
            f"{' ...' if row.size > 10 else ''}."
        ),
        {
            "count": ops.sum(ops.cast(bad_rows, "int32")),
            "index": first,
            "row_sum": ops.take(sums, first),
            "row": ops.take(y, first, axis=0),
        },
        labels,
    )


def one_hot_labels(labels, num_classes=None):
    """Integer labels (B,) or (B, 1) → one-hot float32; soft labels checked, unchanged.

    Raises ValueError naming `labels` when the rank / width is not allowed,
    when an integer label is outside [0, num_classes) and when a one-hot /
    soft row is negative somewhere or does not sum to 1 (within
    `label_sum_tolerance`). The value checks run eagerly and inside compiled
    functions (see `keras_amix.mixers.checks`).
    """
    labels = ops.convert_to_tensor(labels)
    shape = tuple(labels.shape)
    if is_integer_dtype(labels.dtype):
        if len(shape) == 2 and shape[1] == 1:
            labels = ops.reshape(labels, (-1,))
        elif len(shape) != 1:
            raise ValueError(
                "Integer `labels` must have shape (batch,) or (batch, 1); "
                f"received labels.shape={shape}."
            )
        if num_classes is None:
            raise ValueError(
                f"Integer `labels` (dtype {labels.dtype}) need the mixer's "
                "`num_classes` argument; received num_classes=None. Pass "
                "num_classes=K or one-hot / soft labels of shape (batch, K)."
            )
        if keras.backend.standardize_dtype(labels.dtype) == "bool":
            raise ValueError(
                "`labels` must be integer class ids or float one-hot / soft "
                f"rows; received dtype bool (labels.shape={shape})."
            )
        labels = check_integer_labels(labels, num_classes)
        return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if dtype not in _EPS:
        raise ValueError(
            f"`labels` must be integer class ids or float ({sorted(_EPS)}) one-hot "
            f"/ soft rows; received dtype {dtype}."
        )
    if len(shape) != 2:
        raise ValueError(
            "Float `labels` must be one-hot or soft of shape (batch, "
            f"num_classes); received labels.shape={shape}."
        )
    if num_classes is not None and shape[1] is not None and shape[1] != num_classes:
        raise ValueError(
            f"`labels` must have width num_classes={num_classes}; received "
            f"labels.shape={shape}."
        )
    return check_soft_labels(labels)


IMAGE_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "bfloat16",
                "float32", "float64")


def validate_images(images, rank=4):
    """Checks the dtype, static rank and batch size of `images` (ValueError)."""
    shape = tuple(images.shape)
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype not in IMAGE_DTYPES:
        raise ValueError(
            f"`images` must have a real numeric dtype, one of {IMAGE_DTYPES}; "
            f"received images.dtype={dtype}."
        )
    if rank is not None and len(shape) != rank:
        raise ValueError(
            "`images` must be a rank-4 tensor (batch, height, width, "
            f"channels); received images.shape={shape} (rank {len(shape)})."
        )
    if rank is None and len(shape) < 2:
        raise ValueError(
            "`images` must have a batch axis and at least one feature axis; "
            f"received images.shape={shape}."
        )
    if shape[0] is not None and shape[0] < 2:
        raise ValueError(
            "Mixing needs a batch of at least 2 `images`; received batch "
            f"size {shape[0]} (images.shape={shape})."
        )


def broadcast_weight(weight, rank):
    """(B,) → (B, 1, ..., 1) of the given rank."""
    return ops.reshape(weight, (-1,) + (1,) * (rank - 1))


# ---------------------------------------------------------------------------
# Base class.
# ---------------------------------------------------------------------------


class Mixer(keras.layers.Layer):
    """Base class of the class-level mixers (sample parameters, then apply).

    Subclasses implement `sample_params` (and `mix_images` when the mixing is
    more than a per-pixel convex combination with `params["mask"]` or
    `params["lam"]`). `call` = validate, sample, pair `b = images[perm]`, mix.

    Subclasses set the class attribute `default_alpha` (float > 0): the α of
    the method's grid search, used when `alpha` is None (`register` refuses a
    class without one).

    Args:
        alpha: float > 0, λ ~ Beta(alpha, alpha), or None (default) for the
            class's `default_alpha`.
        num_classes: optional int; lets the mixer accept integer labels.
        per_sample: bool; one λ per sample instead of one per batch (paper
            convention: one per batch).
        no_repeat: bool; pair sample i with perm[i] != i.
        fixed_lam: optional float in [0, 1]; forces the target λ (tests, the
            λ = 1 identity).
        seed: int, None or a `keras.random.SeedGenerator`.
        **kwargs: `keras.layers.Layer` arguments (e.g. `name`).

    Call arguments:
        images: (B, H, W, C) tensor, or a dict `{"images": ..., "labels": ...}`
            (then a dict is returned).
        labels: (B, K) one-hot / soft labels, or int labels (B,) / (B, 1) when
            `num_classes` is set. May be None (then None is returned).
        training: bool; False returns the inputs (labels one-hot).
        **extra: method-specific inputs (e.g. `saliency=` for PuzzleMix).

    Returns:
        `(mixed_images, mixed_labels)` with the input's image dtype and shape
        and float labels whose rows sum to 1.
    """

    default_alpha = None
    requires_saliency = False
    mixes_hidden = False
    image_rank = 4

    def __init__(
        self,
        alpha=None,
        num_classes=None,
        per_sample=False,
        no_repeat=False,
        fixed_lam=None,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if alpha is None:
            alpha = self.default_alpha
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not alpha > 0
        ):
            raise ValueError(f"`alpha` must be a number > 0; received alpha={alpha!r}.")
        if num_classes is not None and (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 1
        ):
            raise ValueError(
                "`num_classes` must be None or an int >= 1; received "
                f"num_classes={num_classes!r}."
            )
        if fixed_lam is not None and (
            isinstance(fixed_lam, bool)
            or not isinstance(fixed_lam, numbers.Real)
            or not 0.0 <= fixed_lam <= 1.0
        ):
            raise ValueError(
                "`fixed_lam` must be None or a float in [0, 1]; received "
                f"fixed_lam={fixed_lam!r}."
            )
        self.alpha = float(alpha)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.per_sample = bool(per_sample)
        self.no_repeat = bool(no_repeat)
        self.fixed_lam = None if fixed_lam is None else float(fixed_lam)
        if isinstance(seed, keras.random.SeedGenerator):
            self.seed = None
            self.seed_generator = seed
        else:
            self.seed = seed
            self.seed_generator = keras.random.SeedGenerator(seed)
        # Keep the caller's dtypes (no autocast) and allow `labels=None`.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    # -- sampling -----------------------------------------------------------

    def sample_lam(self, batch_size):
        """Target λ of shape (B,): `fixed_lam`, or Beta(α, α) per batch/sample."""
        if self.fixed_lam is not None:
            return ops.full((batch_size,), self.fixed_lam, dtype="float32")
        shape = (batch_size,) if self.per_sample else (1,)
        lam = sample_lambda(self.seed_generator, self.alpha, shape)
        return ops.broadcast_to(lam, (batch_size,))

    def sample_perm(self, batch_size):
        return sample_permutation(self.seed_generator, batch_size, self.no_repeat)

    def sample_params(self, images, labels=None, **extra):
        """Returns a dict with at least "lam" (B,) float32 and "perm" (B,) int32."""
        raise NotImplementedError

    # -- applying -------------------------------------------------------------

    def mix_images(self, images_a, images_b, params):
        """Mixes `images_a` with the already-paired `images_b`.

        Uses `params["mask"]` (B, H, W, 1), the weight of `images_a`, when
        present, else `params["lam"]` broadcast over all non-batch axes.
        """
        weight = params["mask"] if "mask" in params else params["lam"]
        return _mix_images(images_a, images_b, weight)

    def mix_labels(self, labels, params):
        """λ·y + (1 − λ)·y[perm], with the actual per-sample λ (labels checked)."""
        return self._combine_labels(self.prepare_labels(labels), params)

    def _combine_labels(self, labels, params):
        return _mix_labels(labels, params["perm"], params["lam"])

    def prepare_labels(self, labels):
        return one_hot_labels(labels, self.num_classes)

    def validate_images(self, images):
        validate_images(images, rank=self.image_rank)

    def call(self, images, labels=None, training=True, **extra):
        if isinstance(images, dict):
            if labels is not None:
                raise ValueError(
                    "Pass labels inside the dict ({'images': ..., 'labels': "
                    "...}) or as the second argument, not both."
                )
            data = dict(images)
            mixed, mixed_labels = self._mix(
                data["images"], data.get("labels"), training, **extra
            )
            data["images"] = mixed
            if "labels" in data:
                data["labels"] = mixed_labels
            return data
        return self._mix(images, labels, training, **extra)

    def _mix(self, images, labels, training, **extra):
        if (keras.backend.backend() != "tensorflow"
                and type(images).__module__.startswith("tensorflow")):
            # Inside tf.data on JAX / torch the batch is a TensorFlow graph
            # tensor, which those backends' ops cannot take: the bridge runs
            # this method there through tf.numpy_function (TensorFlow lives in
            # data/; a TensorFlow value means it is loaded already).
            from keras_amix.data import mixer_bridge

            if mixer_bridge.is_graph_tensor(images):
                return mixer_bridge.mix_in_graph(self, images, labels, training, **extra)
        images = ops.convert_to_tensor(images)
        self.validate_images(images)
        if labels is not None:
            labels = self.prepare_labels(labels)
            if (
                images.shape[0] is not None
                and labels.shape[0] is not None
                and images.shape[0] != labels.shape[0]
            ):
                raise ValueError(
                    "`labels` must have the batch size of `images`; received "
                    f"images.shape={tuple(images.shape)}, "
                    f"labels.shape={tuple(labels.shape)}."
                )
        if not training:
            return images, labels
        params = self.sample_params(images, labels, **extra)
        images_b = ops.take(images, params["perm"], axis=0)
        mixed = self.mix_images(images, images_b, params)
        mixed_labels = None if labels is None else self._combine_labels(labels, params)
        return mixed, mixed_labels

    def compute_output_shape(self, images_shape, labels_shape=None):
        return images_shape, labels_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "num_classes": self.num_classes,
                "per_sample": self.per_sample,
                "no_repeat": self.no_repeat,
                "fixed_lam": self.fixed_lam,
                "seed": self.seed,
            }
        )
        return config
