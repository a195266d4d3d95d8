"""SaliencyMix: a CutMix box centred on the source image's saliency peak."""

import math

from keras import ops

from keras_amix.mixers.base import Mixer
from keras_amix.mixers.base import register
from keras_amix.mixers.base import sample_boxes
from keras_amix.mixers.names import DEFAULT_ALPHA


def _filter_separable(x, taps):
    """Filters (B, H, W) with the 1-D kernel `taps` along H then W.

    Symmetric (edge-mirroring) padding; a sum of shifted slices, identical on
    every backend.
    """
    r = len(taps) // 2
    for axis in (1, 2):
        pad = [[0, 0], [0, 0], [0, 0]]
        pad[axis] = [r, r]
        padded = ops.pad(x, pad, mode="symmetric")
        size = ops.shape(x)[axis]
        out = 0.0
        for i, t in enumerate(taps):
            window = padded[:, i : i + size, :] if axis == 1 else padded[:, :, i : i + size]
            out = out + t * window
        x = out
    return x


def gaussian_taps(sigma):
    radius = max(1, int(math.ceil(2.0 * sigma)))
    taps = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(taps)
    return [t / total for t in taps]


def to_gray(images):
    """(B, H, W, C) → (B, H, W) float32 (ITU-R 601 luma for C = 3, else mean)."""
    images = ops.cast(images, "float32")
    if images.shape[-1] == 3:
        return ops.sum(images * ops.array([0.299, 0.587, 0.114], "float32"), axis=-1)
    return ops.mean(images, axis=-1)


def spectral_residual_saliency(gray, sigma=1.0):
    """Spectral-residual saliency of grey images (B, H, W) → (B, H, W).

    log amplitude minus its 3×3 (circular) box-filtered version, inverse FFT with the
    original phase, squared magnitude, Gaussian smoothing (std `sigma` px).
    """
    gray = ops.cast(gray, "float32")
    real, imag = ops.fft2((gray, ops.zeros_like(gray)))
    amplitude = ops.sqrt(real * real + imag * imag)
    # A floor of 1e-3 × the mean amplitude keeps exact spectral zeros (e.g. of
    # a 2-pixel pattern at the Nyquist frequency) from dominating the residual.
    floor = 1e-3 * ops.mean(amplitude, axis=(1, 2), keepdims=True) + 1e-8
    log_amp = ops.log(amplitude + floor)
    # 3×3 box filter of the (periodic) spectrum: circular shifts.
    box = 0.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            box = box + ops.roll(ops.roll(log_amp, dy, axis=1), dx, axis=2)
    residual = log_amp - box / 9.0
    # exp(residual + i·phase) = exp(residual) · (real, imag) / amplitude.
    scale = ops.exp(residual) / ops.maximum(amplitude, 1e-8)
    re, im = ops.ifft2((real * scale, imag * scale))
    saliency = re * re + im * im
    return _filter_separable(saliency, gaussian_taps(sigma))


@register("saliencymix")
class SaliencyMix(Mixer):
    """SaliencyMix: CutMix whose box is centred on the source's salient peak.

    The source is the image pasted in (images[perm]). Its saliency is the
    spectral-residual saliency of the grey image (`spectral_residual_saliency`),
    the box of area (1 − λ)·H·W is centred on the arg-max pixel, clipped to the
    image, and λ is recomputed from the clipped area (exact fraction of pixels
    of the first image).

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (0.2).
        sigma: float > 0, std (pixels) of the Gaussian smoothing of the
            saliency map. Defaults to 1.0.
        num_classes, per_sample, no_repeat, fixed_lam, seed: as `CutMix`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.

    `sample_params(images, labels=None, source=None)` uses `source` (already
    paired images, e.g. another view) instead of images[perm] when given.

    Example:
    ```python
    mixer = keras_amix.mixers.get("saliencymix", alpha=0.2)
    images, labels = mixer(images, labels)
    ```

    Reference:
        Uddin et al., "SaliencyMix: A Saliency Guided Data Augmentation
        Strategy for Better Regularization", ICLR 2021; spectral residual:
        Hou & Zhang, CVPR 2007.
    """

    default_alpha = DEFAULT_ALPHA["saliencymix"]

    def __init__(self, alpha=None, sigma=1.0, **kwargs):
        super().__init__(alpha=alpha, **kwargs)
        if not sigma > 0:
            raise ValueError(f"`sigma` must be > 0; received sigma={sigma!r}.")
        self.sigma = float(sigma)

    def sample_params(self, images, labels=None, source=None, **extra):
        batch, height, width = ops.shape(images)[:3]
        lam = self.sample_lam(batch)
        perm = self.sample_perm(batch)
        if source is None:
            source = ops.take(images, perm, axis=0)
        saliency = spectral_residual_saliency(to_gray(source), self.sigma)
        flat = ops.reshape(saliency, (batch, -1))
        peak = ops.cast(ops.argmax(flat, axis=1), "int32")
        centers = (peak // width, peak % width)
        mask, lam, box = sample_boxes(
            self.seed_generator, lam, height, width, centers=centers
        )
        return {"lam": lam, "perm": perm, "mask": mask, "box": box}

    def get_config(self):
        config = super().get_config()
        config["sigma"] = self.sigma
        return config
