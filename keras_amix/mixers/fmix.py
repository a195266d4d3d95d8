"""FMix: binary masks thresholded from low-frequency Fourier noise."""

import keras
import numpy as np
from keras import ops

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import register
from keras_amix.mixers.names import DEFAULT_ALPHA


def spectrum_scale(height, width, decay=3.0):
    """Amplitude 1 / max(f, 1/max(H, W))^decay on the FFT grid, (H, W) numpy."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    freq = np.sqrt(fy**2 + fx**2)
    return (1.0 / np.maximum(freq, 1.0 / max(height, width)) ** decay).astype("float32")


def low_frequency_noise(seed_gen, batch_size, height, width, decay=3.0):
    """`batch_size` real fields: inverse FFTs of complex Gaussian noise × 1/f^decay.

    One complex inverse FFT yields two fields: its real and imaginary parts are
    independent and identically distributed (the noise is circular and the
    amplitude depends on |f| only), so ceil(B/2) transforms serve B masks.
    """
    scale = ops.convert_to_tensor(spectrum_scale(height, width, decay))
    shape = ((batch_size + 1) // 2, height, width)
    real = keras.random.normal(shape, seed=seed_gen) * scale
    imag = keras.random.normal(shape, seed=seed_gen) * scale
    field_re, field_im = ops.ifft2((real, imag))
    return ops.concatenate([field_re, field_im], axis=0)[:batch_size]


def top_fraction_mask(values, lam):
    """1 on the k = round(λ·N) largest entries of each row of `values`.

    One sort per row gives the k-th largest value; the mask keeps the entries
    at or above it. The returned λ is the mask's exact mean (k / N unless a
    tie sits at the threshold, which continuous noise makes improbable).

    Args:
        values: (B, H, W) float.
        lam: (B,) float in [0, 1].

    Returns:
        `(mask, exact_lam)`: (B, H, W, 1) float32 and the mask means as (B,).
    """
    batch, height, width = ops.shape(values)
    size = height * width
    flat = ops.reshape(values, (batch, size))
    k = ops.cast(ops.round(ops.cast(lam, "float32") * size), "int32")
    descending = ops.flip(ops.sort(flat, axis=1), axis=1)
    threshold = ops.take_along_axis(descending, ops.maximum(k - 1, 0)[:, None], axis=1)
    mask = ops.cast(ops.logical_and(flat >= threshold, (k > 0)[:, None]), "float32")
    exact_lam = ops.mean(mask, axis=1)
    return ops.reshape(mask, (batch, height, width, 1)), exact_lam


@register("fmix")
class FMix(Mixer):
    """FMix: mix with a binary mask from low-frequency Fourier noise.

    A complex spectrum with amplitude ∝ 1/f^δ (δ = `decay`) and Gaussian
    real/imaginary parts is inverse-FFT'd; the k = round(λ·H·W) largest
    values of the real part form the mask of the first image, so the mask mean
    (and the returned λ) is exactly k / (H·W).

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (0.2).
        decay: float > 0, the spectral decay δ. Defaults to 3.0.
        num_classes, per_sample, no_repeat, fixed_lam, seed: as `MixUp`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    Example:
    ```python
    mixer = keras_amix.mixers.get("fmix", alpha=0.2, decay=3.0)
    images, labels = mixer(images, labels)
    ```

    Reference:
        Harris et al., "FMix: Enhancing Mixed Sample Data Augmentation",
        arXiv:2002.12047.
    """

    default_alpha = DEFAULT_ALPHA["fmix"]

    def __init__(self, alpha=None, decay=3.0, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        if not decay > 0:
            raise ValueError(f"`decay` must be > 0; received decay={decay!r}.")
        self.decay = float(decay)

    def sample_params(self, images, labels=None, **extra):
        batch, height, width = ops.shape(images)[:3]
        lam = self.sample_lam(batch)
        perm = self.sample_perm(batch)
        field = low_frequency_noise(self.seed_generator, batch, height, width, self.decay)
        mask, lam = top_fraction_mask(field, lam)
        return {"lam": lam, "perm": perm, "mask": mask}

    def get_config(self):
        config = super().get_config()
        config["decay"] = self.decay
        return config
