"""The RandomResizedCrop math, written once against a backend namespace `ops`.

`ops` is anything with Keras' backend layout (`ops.numpy.*`, `ops.cast`,
`ops.shape`): a Keras backend (the layer and the tf.data function of
`random_resized_crop.py` pass TensorFlow's) or `NUMPY_OPS` (the TF-free
in-memory pipeline of `arrays.py`). Nothing here imports TensorFlow.
"""

import math

import numpy as np


class _NumpyOps:
    """NumPy in the shape of a Keras backend namespace, for the functions below."""

    numpy = np

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype)

    @staticmethod
    def shape(x):
        return np.shape(x)


NUMPY_OPS = _NumpyOps()


def check_range(value, name, positive=False):
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
