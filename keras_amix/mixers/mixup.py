"""MixUp: a convex combination of two images and their labels."""

from keras import ops

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import register
from keras_amix.mixers.names import DEFAULT_ALPHA


@register("mixup")
class MixUp(Mixer):
    """MixUp: x = λ·x_i + (1 − λ)·x_perm(i), y likewise, λ ~ Beta(α, α).

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (1.0).
        num_classes: optional int; needed for integer labels.
        per_sample: bool; one λ per sample (default: one per batch).
        no_repeat: bool; avoid perm[i] == i.
        fixed_lam: optional float in [0, 1] forcing λ.
        seed: int, None or a `keras.random.SeedGenerator`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    Example:
    ```python
    mixer = keras_amix.mixers.get("mixup", alpha=1.0, seed=0)
    images, labels = mixer(images, keras.ops.one_hot(y, 10))
    params = mixer.sample_params(images)          # {"lam", "perm"}
    mixed = mixer.mix_images(view_q, view_k_of_perm, params)
    ```

    Reference:
        Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018;
        AMix paper section 2.1 (eq. 1).
    """

    default_alpha = DEFAULT_ALPHA["mixup"]

    def sample_params(self, images, labels=None, **extra):
        batch = ops.shape(images)[0]
        return {"lam": self.sample_lam(batch), "perm": self.sample_perm(batch)}
