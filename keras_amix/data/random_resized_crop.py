"""RandomResizedCrop: a Keras layer and a stateless tf.data function.

Both share the same math, written against a Keras backend namespace (`ops`),
so the layer runs on any backend and, inside `tf.data`, on TensorFlow.
"""

import math

import keras
import tensorflow as tf
from keras.src.layers.preprocessing.data_layer import DataLayer
from keras.src.utils.backend_utils import DynamicBackend

_TF = DynamicBackend("tensorflow")


def _check_range(value, name, positive=False):
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not value[0] <= value[1]
        or (positive and value[0] <= 0)
        or (not positive and (value[0] <= 0 or value[1] > 1))
    ):
        allowed = "0 < low <= high" if positive else "0 < low <= high <= 1"
        raise ValueError(
            f"`{name}` must be a pair (low, high) with {allowed}. Received: {name}={value}"
        )
    return (float(value[0]), float(value[1]))


def boxes_from_uniforms(ops, u_area, u_ratio, u_pos, height, width, scale, ratio):
    """Crop boxes `(y0, x0, h, w)` int32, shape (B, 4), from uniform draws.

    The torchvision `RandomResizedCrop.get_params` rule, vectorised: for each
    of the T tries (columns of `u_area`/`u_ratio`), the target area is
    `U(scale) * H * W` and the aspect ratio `exp(U(log ratio))`;
    `w = round(sqrt(area * aspect))`, `h = round(sqrt(area / aspect))`; the
    first try with `0 < w <= W` and `0 < h <= H` wins and its top-left corner
    is uniform (`u_pos`, (B, 2)). If no try fits: the central crop of the
    whole image with the aspect ratio clamped to `ratio`.
    """
    np_ = ops.numpy
    fh = ops.cast(height, "float32")
    fw = ops.cast(width, "float32")
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = fh * fw * (scale[0] + (scale[1] - scale[0]) * u_area)
    aspect = np_.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = np_.round(np_.sqrt(target * aspect))
    h = np_.round(np_.sqrt(target / aspect))
    valid = np_.logical_and(
        np_.logical_and(w > 0, w <= fw), np_.logical_and(h > 0, h <= fh)
    )
    first = np_.expand_dims(np_.argmax(ops.cast(valid, "int32"), axis=1), 1)
    found = np_.any(valid, axis=1)
    h = np_.take_along_axis(h, first, axis=1)[:, 0]
    w = np_.take_along_axis(w, first, axis=1)[:, 0]
    y0 = np_.minimum(np_.floor(u_pos[:, 0] * (fh - h + 1.0)), fh - h)
    x0 = np_.minimum(np_.floor(u_pos[:, 1] * (fw - w + 1.0)), fw - w)
    # Fallback: whole image, aspect ratio clamped to `ratio`, centred.
    in_ratio = fw / fh
    fallback_w = np_.where(
        in_ratio > ratio[1], np_.round(fh * ratio[1]), fw
    )
    fallback_h = np_.where(
        in_ratio < ratio[0], np_.round(fw / ratio[0]), fh
    )
    fallback_y0 = np_.floor((fh - fallback_h) / 2.0)
    fallback_x0 = np_.floor((fw - fallback_w) / 2.0)
    boxes = np_.stack(
        [
            np_.where(found, y0, fallback_y0),
            np_.where(found, x0, fallback_x0),
            np_.where(found, h, fallback_h),
            np_.where(found, w, fallback_w),
        ],
        axis=1,
    )
    return ops.cast(boxes, "int32")


def crop_and_resize(ops, images, boxes, height, width):
    """Bilinear resize of the integer boxes `(y0, x0, h, w)` of each image.

    Equals `resize(image[y0:y0+h, x0:x0+w], (height, width), "bilinear")` with
    half-pixel centres and no antialiasing (TensorFlow's default), computed
    for the whole batch with four gathers.
    """
    np_ = ops.numpy
    shape = ops.shape(images)
    batch, in_h, in_w, channels = shape[0], shape[1], shape[2], shape[3]
    boxes = ops.cast(boxes, "float32")
    flat = np_.reshape(images, (-1, channels))

    def axis_coords(start, size, out_size):
        centres = (ops.cast(np_.arange(out_size), "float32") + 0.5)[None, :]
        coords = start[:, None] + centres * (size / out_size)[:, None] - 0.5
        last = (start + size - 1.0)[:, None]
        coords = np_.minimum(np_.maximum(coords, start[:, None]), last)
        low = np_.floor(coords)
        high = np_.minimum(low + 1.0, last)
        return ops.cast(low, "int32"), ops.cast(high, "int32"), coords - low

    y_lo, y_hi, wy = axis_coords(boxes[:, 0], boxes[:, 2], height)
    x_lo, x_hi, wx = axis_coords(boxes[:, 1], boxes[:, 3], width)
    base = ops.cast(np_.arange(batch), "int32") * ops.cast(in_h * in_w, "int32")
    in_w = ops.cast(in_w, "int32")

    def gather(rows, cols):
        index = base[:, None, None] + rows[:, :, None] * in_w + cols[:, None, :]
        values = np_.take(flat, np_.reshape(index, (-1,)), axis=0)
        return np_.reshape(values, (batch, height, width, channels))

    wx = wx[:, None, :, None]
    wy = wy[:, :, None, None]
    top = gather(y_lo, x_lo) * (1.0 - wx) + gather(y_lo, x_hi) * wx
    bottom = gather(y_hi, x_lo) * (1.0 - wx) + gather(y_hi, x_hi) * wx
    return top * (1.0 - wy) + bottom * wy


def center_boxes(ops, batch_size, height, width, ratio):
    """The fallback boxes: the whole image with its aspect ratio clamped to `ratio`."""
    zeros = ops.numpy.zeros((batch_size, 1), "float32")
    return boxes_from_uniforms(
        ops, zeros, zeros, ops.numpy.zeros((batch_size, 2), "float32"), height, width,
        scale=(2.0, 2.0), ratio=ratio,
    )  # scale 2 > 1 never fits: every row takes the fallback.


def random_resized_crop(
    images, size, seed, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), max_attempts=10
):
    """Stateless RandomResizedCrop of a batch (TensorFlow, for tf.data maps).

    Args:
        images: (B, H, W, C) tensor (H, W may be dynamic).
        size: output `(height, width)`.
        seed: stateless seed, int tensor of shape (2,).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
        max_attempts: tries before the central-crop fallback (10 in torchvision).

    Returns:
        (B, height, width, C) float32.
    """
    scale = _check_range(scale, "scale")
    ratio = _check_range(ratio, "ratio", positive=True)
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    seeds = tf.random.experimental.stateless_split(seed, 3)
    batch = shape[0]
    u_area = tf.random.stateless_uniform((batch, max_attempts), seeds[0])
    u_ratio = tf.random.stateless_uniform((batch, max_attempts), seeds[1])
    u_pos = tf.random.stateless_uniform((batch, 2), seeds[2])
    boxes = boxes_from_uniforms(_TF, u_area, u_ratio, u_pos, shape[1], shape[2], scale, ratio)
    return crop_and_resize(_TF, images, boxes, int(size[0]), int(size[1]))


@keras.saving.register_keras_serializable(package="keras_amix")
class RandomResizedCrop(DataLayer):
    """Crops a random area / aspect-ratio box of each image and resizes it.

    The torchvision / Inception crop: for each image, try up to
    `max_attempts` times an area fraction `U(scale)` and an aspect ratio
    `exp(U(log ratio))` (width / height), take the first box that fits with a
    uniform position; otherwise the centred whole image with its aspect ratio
    clamped to `ratio`. The box is resized bilinearly (half-pixel centres, no
    antialiasing) to `(height, width)`. Each image of a batch gets its own box.
    With `training=False` every image takes the fallback box (a centre crop).

    Safe inside `tf.data` on every backend (it switches to TensorFlow there).

    Args:
        height: output height.
        width: output width.
        scale: `(low, high)` area fraction of the crop, `0 < low <= high <= 1`.
        ratio: `(low, high)` aspect ratio of the crop, `0 < low <= high`.
        max_attempts: tries before the fallback.
        seed: int seed of the layer's `SeedGenerator`.

    Call arguments:
        images: (B, H, W, C) or (H, W, C), any dtype; output float.
        training: random crops if True, centre crops if False.

    Example:

    ```python
    crop = keras_amix.data.RandomResizedCrop(64, 64, scale=(0.2, 1.0), seed=1)
    ds = ds.batch(32).map(lambda x, y: (crop(x), y))
    ```

    Reference:
        Szegedy et al., "Going deeper with convolutions" (2015), the crop of
        the DESIGN section 6 / 10 augmentations; torchvision
        `RandomResizedCrop.get_params` for the sampling rule.
    """

    def __init__(
        self,
        height,
        width,
        scale=(0.08, 1.0),
        ratio=(3.0 / 4.0, 4.0 / 3.0),
        max_attempts=10,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width), ("max_attempts", max_attempts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer. Received: {name}={value}"
                )
        self.height = height
        self.width = width
        self.scale = _check_range(scale, "scale")
        self.ratio = _check_range(ratio, "ratio", positive=True)
        self.max_attempts = max_attempts
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = False

    def sample_boxes(self, batch_size, height, width):
        """Draws (batch_size, 4) int32 boxes `(y0, x0, h, w)` for H x W images."""
        ops = self.backend
        seed = self._get_seed_generator(ops._backend)
        shape = (batch_size, self.max_attempts)
        u_area = ops.random.uniform(shape, seed=seed)
        u_ratio = ops.random.uniform(shape, seed=seed)
        u_pos = ops.random.uniform((batch_size, 2), seed=seed)
        return boxes_from_uniforms(
            ops, u_area, u_ratio, u_pos, height, width, self.scale, self.ratio
        )

    def call(self, images, training=True):
        ops = self.backend
        unbatched = len(images.shape) == 3
        if unbatched:
            images = ops.numpy.expand_dims(images, 0)
        images = ops.cast(images, self.compute_dtype)
        shape = ops.shape(images)
        if training:
            boxes = self.sample_boxes(shape[0], shape[1], shape[2])
        else:
            boxes = center_boxes(ops, shape[0], shape[1], shape[2], self.ratio)
        outputs = crop_and_resize(ops, images, boxes, self.height, self.width)
        outputs = ops.cast(outputs, self.compute_dtype)
        return outputs[0] if unbatched else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-3], self.height, self.width, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "scale": self.scale,
                "ratio": self.ratio,
                "max_attempts": self.max_attempts,
                "seed": self.seed,
            }
        )
        return config
