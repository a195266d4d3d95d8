"""The MoCo v2 view augmentation in NumPy, for machines without TensorFlow.

The twin of `augment.moco_v2_view` / `augment_two_views` for the in-memory
pipeline of `arrays.py` (e.g. a JAX GPU host without TensorFlow): the same
ops, parameters and order; each op equals its `augment.py` counterpart for the
same per-image factors (tested), while the random draws come from a
`numpy.random.Generator`, so the views are not bit-identical to the tf.data
pipeline's. Images are float32 `(B, H, W, 3)` in [0, 1] unless stated.
Nothing here imports TensorFlow.
"""

import numpy as np

from keras_amix.data.crop import NUMPY_OPS
from keras_amix.data.crop import boxes_from_uniforms
from keras_amix.data.crop import check_range
from keras_amix.data.crop import crop_and_resize

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def blur_kernel_size(image_size):
    """Odd kernel size of about 10 % of the image side (at least 3)."""
    size = int(round(0.1 * image_size))
    size = max(3, size)
    return size if size % 2 == 1 else size + 1


def _per_image(values):
    return np.asarray(values, np.float32)[:, None, None, None]


def _luma(images):
    """(B, H, W, 1) luma (a matrix product: faster than a sum over the 3 channels)."""
    return (images @ np.asarray(LUMA, images.dtype))[..., None]


def grayscale(images):
    """Luma (0.299 R + 0.587 G + 0.114 B) repeated to 3 channels."""
    return np.repeat(_luma(images), 3, axis=-1)


def adjust_brightness(images, factor):
    return np.clip(images * _per_image(factor), 0.0, 1.0)


def adjust_contrast(images, factor):
    mean = np.mean(_luma(images), axis=(1, 2, 3), keepdims=True)
    factor = _per_image(factor)
    return np.clip(factor * images + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(images, factor):
    factor = _per_image(factor)
    return np.clip(factor * images + (1.0 - factor) * _luma(images), 0.0, 1.0)


def rgb_to_hsv(images):
    """`tf.image.rgb_to_hsv`: hue in turns [0, 1), saturation, value."""
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    # Element-wise over the three planes: much faster than reducing a size-3 axis.
    value = np.maximum(np.maximum(red, green), blue)
    delta = value - np.minimum(np.minimum(red, green), blue)
    safe = np.where(delta > 0, delta, np.float32(1.0))
    hue = np.where(value == red, (green - blue) / safe,
                   np.where(value == green, 2.0 + (blue - red) / safe,
                            4.0 + (red - green) / safe))
    hue = np.where(delta > 0, np.mod(hue / 6.0, 1.0), 0.0)
    saturation = np.where(value > 0, delta / np.where(value > 0, value, 1.0), 0.0)
    return np.stack([hue, saturation, value], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv):
    """`tf.image.hsv_to_rgb`."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    dh = hue * 6.0
    red = np.clip(np.abs(dh - 3.0) - 1.0, 0.0, 1.0)
    green = np.clip(2.0 - np.abs(dh - 2.0), 0.0, 1.0)
    blue = np.clip(2.0 - np.abs(dh - 4.0), 0.0, 1.0)
    rgb = np.stack([red, green, blue], axis=-1)
    return (((rgb - 1.0) * saturation[..., None]) + 1.0) * value[..., None]


def adjust_hue(images, delta):
    hsv = rgb_to_hsv(images)
    hsv[..., 0] = np.mod(hsv[..., 0] + np.asarray(delta, np.float32)[:, None, None], 1.0)
    return hsv_to_rgb(hsv).astype(np.float32)


def gaussian_blur(images, sigma, kernel_size):
    """Separable Gaussian blur with one `sigma` (B,) per image, reflect borders."""
    radius = kernel_size // 2
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * np.square(taps[None, :] / np.asarray(sigma, np.float32)[:, None]))
    kernel = kernel / np.sum(kernel, axis=1, keepdims=True)  # (B, k)
    height, width = images.shape[1], images.shape[2]
    padded = np.pad(images, ((0, 0), (radius, radius), (0, 0), (0, 0)), mode="reflect")
    out = sum(kernel[:, t, None, None, None] * padded[:, t:t + height]
              for t in range(kernel_size))
    padded = np.pad(out, ((0, 0), (0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(kernel[:, t, None, None, None] * padded[:, :, t:t + width]
               for t in range(kernel_size)).astype(np.float32)


def color_jitter(images, rng, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8):
    """torchvision ColorJitter with probability `p` per image, in the fixed order
    brightness, contrast, saturation, hue (as `augment.color_jitter`)."""
    batch = len(images)

    def factor(v):
        return rng.uniform(max(0.0, 1.0 - v), 1.0 + v, batch)

    apply = rng.random(batch) < p
    out = images
    if brightness:
        out = adjust_brightness(out, factor(brightness))
    if contrast:
        out = adjust_contrast(out, factor(contrast))
    if saturation:
        out = adjust_saturation(out, factor(saturation))
    if hue:
        out = adjust_hue(out, rng.uniform(-hue, hue, batch))
    return np.where(apply[:, None, None, None], out, images)


def random_resized_crop(images, size, rng, scale=(0.2, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                        max_attempts=10):
    """RandomResizedCrop of each image to `size` (the rule of `crop.boxes_from_uniforms`)."""
    scale = check_range(scale, "scale")
    ratio = check_range(ratio, "ratio", positive=True)
    batch, height, width = images.shape[:3]
    u_area = rng.random((batch, max_attempts), dtype=np.float32)
    u_ratio = rng.random((batch, max_attempts), dtype=np.float32)
    u_pos = rng.random((batch, 2), dtype=np.float32)
    boxes = boxes_from_uniforms(NUMPY_OPS, u_area, u_ratio, u_pos, height, width, scale, ratio)
    return crop_and_resize(NUMPY_OPS, images.astype(np.float32), boxes, int(size[0]),
                           int(size[1])).astype(np.float32)


def moco_v2_view(images, rng, image_size, scale=(0.2, 1.0), blur_kernel=None):
    """One MoCo v2 view of a batch in [0, 1]: crop, jitter (p 0.8), grey (p 0.2),
    blur (p 0.5, σ ~ U(0.1, 2)), flip (p 0.5), as `augment.moco_v2_view`."""
    height, width = image_size
    blur_kernel = blur_kernel or blur_kernel_size(min(height, width))
    x = np.clip(random_resized_crop(images, (height, width), rng, scale=scale), 0.0, 1.0)
    x = color_jitter(x, rng)
    batch = len(x)
    grey = rng.random(batch) < 0.2
    x = np.where(grey[:, None, None, None], grayscale(x), x)
    blur, sigma = rng.random(batch) < 0.5, rng.uniform(0.1, 2.0, batch)
    x = np.where(blur[:, None, None, None], gaussian_blur(x, sigma, blur_kernel), x)
    flip = rng.random(batch) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x).astype(np.float32)
