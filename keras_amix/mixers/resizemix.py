"""ResizeMix: paste a shrunken copy of the paired image."""

import keras
from keras import ops

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import box_mask
from keras_amix.mixers.primitives import cast_like, mix_images
from keras_amix.mixers.base import register
from keras_amix.mixers.names import DEFAULT_ALPHA


def paste_resized(target, source, box):
    """Nearest-neighbour resize of `source` into `box` of `target`'s grid.

    Returns a (B, H, W, C) tensor equal to the resized source inside the box
    (pixel (y, x) reads source[floor((y − y1)·H / h), floor((x − x1)·W / w)],
    PyTorch's "nearest") and to `source` elsewhere (masked out by the caller).

    Args:
        target: (B, H, W, C), only its shape is used.
        source: (B, H, W, C) already-paired source images.
        box: (B, 4) int32 `[y1, x1, y2, x2]`.
    """
    batch, height, width, channels = ops.shape(target)
    y1, x1, y2, x2 = (box[:, i : i + 1] for i in range(4))
    h = ops.maximum(y2 - y1, 1)
    w = ops.maximum(x2 - x1, 1)
    rows = ops.arange(height, dtype="int32")[None, :]
    cols = ops.arange(width, dtype="int32")[None, :]
    src_rows = ops.clip(((rows - y1) * height) // h, 0, height - 1)  # (B, H)
    src_cols = ops.clip(((cols - x1) * width) // w, 0, width - 1)  # (B, W)
    full = (batch, height, width, channels)
    out = ops.take_along_axis(
        source, ops.broadcast_to(src_rows[:, :, None, None], full), axis=1
    )
    return ops.take_along_axis(
        out, ops.broadcast_to(src_cols[:, None, :, None], full), axis=2
    )


@register("resizemix")
class ResizeMix(Mixer):
    """ResizeMix: shrink the paired (source) image by τ and paste it.

    τ ~ U(scope) (one per batch, or per sample with `per_sample=True`); the
    source is resized (nearest) to round(τH) × round(τW) and pasted at a
    uniform position fully inside the target. λ = 1 − pasted area / (H·W)
    exactly. `fixed_lam` sets τ = √(1 − fixed_lam) (λ = 1: nothing pasted).

    Args:
        scope: (low, high) range of τ, 0 ≤ low ≤ high ≤ 1. Defaults to
            (0.1, 0.8).
        alpha: unused by the sampling (kept for a uniform mixer interface;
            `default_alpha` 1.0).
        num_classes, per_sample, no_repeat, fixed_lam, seed: as `MixUp`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    `sample_params` returns "lam", "perm", "mask" (1 = target pixels) and
    "box" (B, 4) int32 `[y1, x1, y2, x2]`; `mix_images` resizes `images_b`
    into the box.

    Example:
    ```python
    mixer = keras_amix.mixers.get("resizemix", scope=(0.1, 0.8))
    images, labels = mixer(images, labels)
    ```

    Reference:
        Qin et al., "ResizeMix: Mixing Data with Preserved Object
        Information and True Labels", arXiv:2012.11101.
    """

    default_alpha = DEFAULT_ALPHA["resizemix"]

    def __init__(self, scope=(0.1, 0.8), **kwargs):
        super().__init__(**kwargs)
        scope = tuple(float(s) for s in scope)
        if len(scope) != 2 or not 0.0 <= scope[0] <= scope[1] <= 1.0:
            raise ValueError(
                "`scope` must be (low, high) with 0 <= low <= high <= 1; "
                f"received scope={scope!r}."
            )
        self.scope = scope

    def sample_params(self, images, labels=None, **extra):
        batch, height, width = ops.shape(images)[:3]
        perm = self.sample_perm(batch)
        if self.fixed_lam is not None:
            tau = ops.full((batch,), (1.0 - self.fixed_lam) ** 0.5, dtype="float32")
        else:
            shape = (batch,) if self.per_sample else (1,)
            tau = keras.random.uniform(
                shape, self.scope[0], self.scope[1], seed=self.seed_generator
            )
            tau = ops.broadcast_to(tau, (batch,))
        h = ops.cast(ops.round(tau * ops.cast(height, "float32")), "int32")
        w = ops.cast(ops.round(tau * ops.cast(width, "float32")), "int32")
        uy = keras.random.uniform((batch,), seed=self.seed_generator)
        ux = keras.random.uniform((batch,), seed=self.seed_generator)
        y1 = ops.minimum(
            ops.cast(ops.floor(uy * ops.cast(height - h + 1, "float32")), "int32"),
            height - h,
        )
        x1 = ops.minimum(
            ops.cast(ops.floor(ux * ops.cast(width - w + 1, "float32")), "int32"),
            width - w,
        )
        mask = box_mask(y1, x1, y1 + h, x1 + w, height, width)
        lam = 1.0 - ops.cast(h * w, "float32") / ops.cast(height * width, "float32")
        box = ops.stack([y1, x1, y1 + h, x1 + w], axis=1)
        return {"lam": lam, "perm": perm, "mask": mask, "box": box}

    def mix_images(self, images_a, images_b, params):
        images_a = ops.convert_to_tensor(images_a)
        dtype = images_a.dtype
        a = ops.cast(images_a, "float32")
        pasted = paste_resized(a, ops.cast(images_b, "float32"), params["box"])
        return cast_like(mix_images(a, pasted, params["mask"]), dtype)

    def get_config(self):
        config = super().get_config()
        config["scope"] = list(self.scope)
        return config
