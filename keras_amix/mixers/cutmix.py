"""CutMix: paste a random box of the paired image."""

from keras import ops

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import register
from keras_amix.mixers.base import sample_boxes
from keras_amix.mixers.names import DEFAULT_ALPHA


@register("cutmix")
class CutMix(Mixer):
    """CutMix: replace a box of area (1 − λ)·H·W by the paired image's pixels.

    The box centre is uniform over the pixels (one centre per sample), the box
    is clipped to the image and λ is recomputed from the clipped area, so the
    returned λ is exactly the fraction of pixels kept from the first image.

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (0.2).
        num_classes: optional int; needed for integer labels.
        per_sample: bool; one target λ per sample (default: one per batch).
        no_repeat: bool; avoid perm[i] == i.
        fixed_lam: optional float in [0, 1] forcing the target λ.
        seed: int, None or a `keras.random.SeedGenerator`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    `sample_params` returns "lam" (exact, (B,)), "perm", "mask" (B, H, W, 1)
    (1 = first image) and "box" (B, 4) int32 `[y1, x1, y2, x2]`.

    Example:
    ```python
    mixer = keras_amix.mixers.get("cutmix", alpha=1.0, num_classes=10)
    images, soft_labels = mixer(images, int_labels)
    ```

    Reference:
        Yun et al., "CutMix: Regularization Strategy to Train Strong
        Classifiers with Localizable Features", ICCV 2019.
    """

    default_alpha = DEFAULT_ALPHA["cutmix"]

    def sample_params(self, images, labels=None, **extra):
        batch, height, width = ops.shape(images)[:3]
        lam = self.sample_lam(batch)
        perm = self.sample_perm(batch)
        mask, lam, box = sample_boxes(self.seed_generator, lam, height, width)
        return {"lam": lam, "perm": perm, "mask": mask, "box": box}
