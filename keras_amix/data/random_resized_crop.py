"""RandomResizedCrop: a Keras layer and a stateless tf.data function.

Both share the math of `crop.py`, written against a Keras backend namespace,
so the layer runs on any backend and, inside `tf.data`, on TensorFlow.
"""

import keras
import tensorflow as tf
from keras.src.layers.preprocessing.data_layer import DataLayer
from keras.src.utils.backend_utils import DynamicBackend

from keras_amix.data.crop import check_range
from keras_amix.data.crop import boxes_from_uniforms
from keras_amix.data.crop import center_boxes
from keras_amix.data.crop import crop_and_resize

_TF = DynamicBackend("tensorflow")


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
    scale = check_range(scale, "scale")
    ratio = check_range(ratio, "ratio", positive=True)
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
        self.scale = check_range(scale, "scale")
        self.ratio = check_range(ratio, "ratio", positive=True)
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
