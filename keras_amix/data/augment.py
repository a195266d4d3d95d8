"""Vectorised, stateless image augmentations for tf.data (TensorFlow).

Every op takes a batch `(B, H, W, C)` float32 (pixel values in [0, 1] unless
stated) and a stateless `seed` (int tensor of shape (2,)), draws one random
decision per image, and returns a batch. The same seed gives the same result,
eagerly or inside `tf.data.Dataset.map` (the pipelines draw one seed per batch
from `tf.data.Dataset.random`, so epochs differ but a fixed seed repeats).
"""

import tensorflow as tf

from keras_amix.data.numpy_augment import LUMA as _LUMA
from keras_amix.data.numpy_augment import blur_kernel_size
from keras_amix.data.random_resized_crop import random_resized_crop


def _seeds(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _per_image(values):
    return values[:, None, None, None]


def _bernoulli(seed, batch, p):
    return tf.random.stateless_uniform((batch,), seed) < p


def random_flip(images, seed):
    """Flips each image left-right with probability 1/2."""
    flip = _bernoulli(seed, tf.shape(images)[0], 0.5)
    return tf.where(_per_image(flip), tf.reverse(images, axis=[2]), images)


def reflect_pad_crop(images, pad, seed):
    """Pads `pad` pixels per side by reflection and crops back at a random offset.

    The CIFAR augmentation (4-pixel reflect padding for 32 x 32 images): each
    image gets its own offset in `[0, 2 * pad]` along each axis; the result is
    the input shifted by `offset - pad` with reflected borders.
    """
    if pad == 0:
        return images
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform(
        (batch, 2), seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols = offsets[:, 1:] + tf.range(width)[None, :]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(images, cols, axis=2, batch_dims=1)


def grayscale(images):
    """Luma (0.299 R + 0.587 G + 0.114 B) repeated to 3 channels."""
    gray = tf.reduce_sum(images * tf.constant(_LUMA, images.dtype), axis=-1, keepdims=True)
    return tf.repeat(gray, 3, axis=-1)


def random_grayscale(images, seed, p=0.2):
    """Turns each image grey with probability `p`."""
    apply = _bernoulli(seed, tf.shape(images)[0], p)
    return tf.where(_per_image(apply), grayscale(images), images)


def adjust_brightness(images, factor):
    """torchvision brightness: `x * factor`, clipped to [0, 1]; factor (B,)."""
    return tf.clip_by_value(images * _per_image(factor), 0.0, 1.0)


def adjust_contrast(images, factor):
    """torchvision contrast: blend with the image's mean luma; factor (B,)."""
    mean = tf.reduce_mean(grayscale(images)[..., :1], axis=[1, 2, 3], keepdims=True)
    factor = _per_image(factor)
    return tf.clip_by_value(factor * images + (1.0 - factor) * mean, 0.0, 1.0)


def adjust_saturation(images, factor):
    """torchvision saturation: blend with the grey image; factor (B,)."""
    factor = _per_image(factor)
    return tf.clip_by_value(factor * images + (1.0 - factor) * grayscale(images), 0.0, 1.0)


def adjust_hue(images, delta):
    """Shifts the hue by `delta` (B,) turns (in [-0.5, 0.5]) in HSV space."""
    hsv = tf.image.rgb_to_hsv(images)
    hue = tf.math.floormod(hsv[..., 0] + delta[:, None, None], 1.0)
    return tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


def color_jitter(images, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8):
    """torchvision ColorJitter applied to each image with probability `p`.

    Factors per image: brightness, contrast and saturation `U(max(0, 1 - v),
    1 + v)`, hue shift `U(-hue, hue)`. The four ops run in a fixed order
    (brightness, contrast, saturation, hue); torchvision draws a random order
    per image.
    """
    batch = tf.shape(images)[0]
    s_apply, s_b, s_c, s_s, s_h = _seeds(seed, 5)

    def factor(s, v):
        return tf.random.stateless_uniform((batch,), s, max(0.0, 1.0 - v), 1.0 + v)

    out = images
    if brightness:
        out = adjust_brightness(out, factor(s_b, brightness))
    if contrast:
        out = adjust_contrast(out, factor(s_c, contrast))
    if saturation:
        out = adjust_saturation(out, factor(s_s, saturation))
    if hue:
        out = adjust_hue(out, tf.random.stateless_uniform((batch,), s_h, -hue, hue))
    return tf.where(_per_image(_bernoulli(s_apply, batch, p)), out, images)


def gaussian_blur(images, sigma, kernel_size):
    """Separable Gaussian blur with one `sigma` (B,) per image, reflect borders."""
    radius = kernel_size // 2
    taps = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)  # (B, k)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [radius, radius], [0, 0], [0, 0]], mode="REFLECT")
    out = tf.zeros_like(images)
    for t in range(kernel_size):
        out += kernel[:, t, None, None, None] * padded[:, t : t + height]
    padded = tf.pad(out, [[0, 0], [0, 0], [radius, radius], [0, 0]], mode="REFLECT")
    out = tf.zeros_like(images)
    for t in range(kernel_size):
        out += kernel[:, t, None, None, None] * padded[:, :, t : t + width]
    return out


def random_gaussian_blur(images, seed, sigma=(0.1, 2.0), kernel_size=3, p=0.5):
    """Blurs each image with probability `p`, sigma ~ U(sigma)."""
    batch = tf.shape(images)[0]
    s_apply, s_sigma = _seeds(seed, 2)
    sigmas = tf.random.stateless_uniform((batch,), s_sigma, sigma[0], sigma[1])
    apply = _bernoulli(s_apply, batch, p)
    return tf.where(_per_image(apply), gaussian_blur(images, sigmas, kernel_size), images)


def normalize(images, mean=None, std=None):
    """`(x - mean) / std` per channel for x in [0, 1]; identity parts where None."""
    images = tf.cast(images, tf.float32)
    if mean is not None:
        images = images - tf.constant(mean, tf.float32)
    if std is not None:
        images = images / tf.constant(std, tf.float32)
    return images


def moco_v2_view(images, seed, image_size, scale=(0.2, 1.0), blur_kernel=None):
    """One MoCo v2 view of a batch in [0, 1]: crop, jitter, grey, blur, flip."""
    height, width = image_size
    blur_kernel = blur_kernel or blur_kernel_size(min(height, width))
    s_crop, s_jitter, s_gray, s_blur, s_flip = _seeds(seed, 5)
    x = random_resized_crop(images, (height, width), s_crop, scale=scale)
    x = tf.clip_by_value(x, 0.0, 1.0)
    x = color_jitter(x, s_jitter, 0.4, 0.4, 0.4, 0.1, p=0.8)
    x = random_grayscale(x, s_gray, p=0.2)
    x = random_gaussian_blur(x, s_blur, sigma=(0.1, 2.0), kernel_size=blur_kernel, p=0.5)
    return random_flip(x, s_flip)


def augment_two_views(images, seed, image_size, mean=None, std=None, scale=(0.2, 1.0)):
    """Two independent MoCo v2 views of a batch (DESIGN section 6).

    Args:
        images: (B, H, W, 3) uint8 or float in [0, 255].
        seed: stateless seed, int tensor of shape (2,).
        image_size: output `(height, width)`.
        mean, std: per-channel statistics in [0, 1] units (None: no shift /
            no scaling).
        scale: RandomResizedCrop area range.

    Returns:
        `(view1, view2)`, each (B, height, width, 3) float32, normalised.
    """
    images = tf.cast(images, tf.float32) / 255.0
    s1, s2 = _seeds(seed, 2)
    view1 = moco_v2_view(images, s1, image_size, scale=scale)
    view2 = moco_v2_view(images, s2, image_size, scale=scale)
    return normalize(view1, mean, std), normalize(view2, mean, std)
