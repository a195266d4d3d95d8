"""Augmentation ops: hand-computed cases, properties, eager == inside tf.data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_amix import data as kd
from keras_amix.data import augment as aug
from keras_amix.data.random_resized_crop import _TF
from keras_amix.data.random_resized_crop import boxes_from_uniforms
from keras_amix.data.random_resized_crop import crop_and_resize

pytestmark = pytest.mark.backend_independent

SEED = tf.constant([3, 7], tf.int64)


def _in_tf_data(fn, images, seed=SEED):
    ds = tf.data.Dataset.from_tensors((images, seed)).map(fn)
    return next(iter(ds))


def _eager_and_mapped(fn, images):
    eager = fn(images, SEED)
    mapped = _in_tf_data(fn, images)
    if isinstance(eager, tuple):
        for a, b in zip(eager, mapped):
            np.testing.assert_allclose(a, b, atol=1e-5)
    else:
        np.testing.assert_allclose(eager, mapped, atol=1e-5)
    return eager


def _ramp(batch=4, size=8):
    ramp = np.arange(size * size, dtype=np.float32).reshape(1, size, size, 1)
    return tf.constant(np.repeat(np.repeat(ramp, batch, 0), 3, -1))


# ---------------------------------------------------------------- crops


def test_reflect_pad_crop_is_a_shifted_window_of_the_reflected_image():
    images = _ramp(batch=16)
    out = _eager_and_mapped(lambda x, s: aug.reflect_pad_crop(x, 2, s), images).numpy()
    padded = np.pad(images.numpy(), [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    offsets = set()
    for b in range(16):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(out[b], padded[b, dy : dy + 8, dx : dx + 8])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 3  # per-image offsets, not one per batch


def test_random_flip_per_image():
    images = _ramp(batch=32)
    out = _eager_and_mapped(aug.random_flip, images).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images.numpy())]
    same = [np.array_equal(o, i) for o, i in zip(out, images.numpy())]
    assert all(f != s for f, s in zip(flipped, same))
    assert 4 < sum(flipped) < 28


def test_crop_and_resize_matches_tf_resize_of_the_crop():
    images = np.random.default_rng(0).random((3, 12, 16, 3)).astype("float32")
    boxes = np.array([[2, 3, 8, 10], [0, 0, 12, 16], [5, 1, 3, 4]], np.int32)
    out = crop_and_resize(_TF, tf.constant(images), tf.constant(boxes), 6, 7)
    for b, (y0, x0, h, w) in enumerate(boxes):
        expected = tf.image.resize(images[b, y0 : y0 + h, x0 : x0 + w], (6, 7), antialias=False)
        np.testing.assert_allclose(out[b], expected, atol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_image_bounds():
    rng = np.random.default_rng(0)
    batch, tries, height, width = 400, 10, 64, 48
    scale, ratio = (0.2, 0.6), (0.5, 2.0)
    boxes = boxes_from_uniforms(
        _TF,
        tf.constant(rng.random((batch, tries)), tf.float32),
        tf.constant(rng.random((batch, tries)), tf.float32),
        tf.constant(rng.random((batch, 2)), tf.float32),
        height, width, scale, ratio,
    ).numpy()
    y0, x0, h, w = boxes.T
    assert (y0 >= 0).all() and (x0 >= 0).all()
    assert (y0 + h <= height).all() and (x0 + w <= width).all()
    # w, h are rounded: allow half a pixel each way.
    area_hi = (w + 0.5) * (h + 0.5) / (height * width)
    area_lo = (w - 0.5) * (h - 0.5) / (height * width)
    assert (area_hi >= scale[0]).all() and (area_lo <= scale[1]).all()
    assert ((w + 0.5) / (h - 0.5) >= ratio[0]).all()
    assert ((w - 0.5) / (h + 0.5) <= ratio[1]).all()
    # The positions spread over the free range.
    assert len(set(y0.tolist())) > 10


def test_crop_boxes_fall_back_to_centre_crop_after_failed_tries():
    # Aspect ratios 3..4 at >= 90 % of a square image never fit.
    boxes = boxes_from_uniforms(
        _TF, tf.random.uniform((5, 10)), tf.random.uniform((5, 10)), tf.random.uniform((5, 2)),
        40, 40, (0.9, 1.0), (3.0, 4.0),
    ).numpy()
    np.testing.assert_array_equal(boxes, np.tile([[13, 0, 13, 40]], (5, 1)))


def test_random_resized_crop_function_eager_and_mapped_and_seeded():
    images = tf.random.uniform((4, 20, 24, 3))
    out = _eager_and_mapped(lambda x, s: kd.random_resized_crop(x, (8, 6), s), images)
    assert out.shape == (4, 8, 6, 3)
    other = kd.random_resized_crop(images, (8, 6), tf.constant([3, 8], tf.int64))
    assert not np.allclose(out, other)


def test_random_resized_crop_layer():
    images = np.random.default_rng(1).random((4, 20, 24, 3)).astype("float32")
    layer = kd.RandomResizedCrop(8, 6, scale=(0.3, 1.0), seed=5)
    out = layer(images)
    assert out.shape == (4, 8, 6, 3) and layer(images[0]).shape == (8, 6, 3)
    # Fixed seed repeats.
    again = kd.RandomResizedCrop(8, 6, scale=(0.3, 1.0), seed=5)(images)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(again))
    # Values come from the image (a convex combination of pixels).
    assert float(keras.ops.min(out)) >= images.min() and float(keras.ops.max(out)) <= images.max()
    # Inside tf.data.
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2).map(layer)
    assert [tuple(b.shape) for b in ds] == [(2, 8, 6, 3), (2, 8, 6, 3)]
    # training=False: the centre crop of a 20 x 24 image, ratio <= 4/3 -> 20 x 24 kept (1.2).
    centre = layer(images, training=False)
    expected = tf.image.resize(images, (8, 6), antialias=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(centre), expected, atol=1e-5)
    # Serialization.
    clone = kd.RandomResizedCrop.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.compute_output_shape((None, 20, 24, 3)) == (None, 8, 6, 3)
    with pytest.raises(ValueError, match=r"scale=\(0.5, 0.2\)"):
        kd.RandomResizedCrop(8, 8, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="height"):
        kd.RandomResizedCrop(0, 8)


# ---------------------------------------------------------------- colour


def test_colour_ops_by_hand():
    red = tf.constant([[[[1.0, 0.0, 0.0]]]])
    np.testing.assert_allclose(aug.grayscale(red)[0, 0, 0], [0.299] * 3, atol=1e-6)
    # Hue: +1/3 turn maps red to green.
    np.testing.assert_allclose(aug.adjust_hue(red, tf.constant([1 / 3]))[0, 0, 0], [0, 1, 0], atol=1e-5)
    two = tf.constant([[[[0.2, 0.2, 0.2], [0.6, 0.6, 0.6]]]])
    # Contrast 0.5 around the mean 0.4: 0.3 and 0.5.
    np.testing.assert_allclose(
        aug.adjust_contrast(two, tf.constant([0.5]))[0, 0, :, 0], [0.3, 0.5], atol=1e-6
    )
    np.testing.assert_allclose(
        aug.adjust_brightness(two, tf.constant([2.0]))[0, 0, :, 0], [0.4, 1.0], atol=1e-6
    )
    # Saturation 0: grey; 2: away from grey, clipped.
    colour = tf.constant([[[[0.5, 0.25, 0.0]]]])
    gray = 0.299 * 0.5 + 0.587 * 0.25
    np.testing.assert_allclose(aug.adjust_saturation(colour, tf.constant([0.0]))[0, 0, 0], [gray] * 3, atol=1e-6)
    np.testing.assert_allclose(
        aug.adjust_saturation(colour, tf.constant([2.0]))[0, 0, 0],
        np.clip([2 * 0.5 - gray, 2 * 0.25 - gray, -gray], 0, 1), atol=1e-6,
    )


def test_color_jitter_probability_and_mapping():
    images = tf.random.uniform((32, 4, 4, 3))
    np.testing.assert_allclose(aug.color_jitter(images, SEED, p=0.0), images)
    out = _eager_and_mapped(lambda x, s: aug.color_jitter(x, s, p=0.5), images).numpy()
    changed = [not np.allclose(o, i) for o, i in zip(out, images.numpy())]
    assert 4 < sum(changed) < 28
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_random_grayscale_probability():
    images = tf.random.uniform((64, 4, 4, 3))
    out = _eager_and_mapped(lambda x, s: aug.random_grayscale(x, s, p=0.5), images).numpy()
    grey = [np.allclose(o[..., 0], o[..., 1]) and np.allclose(o, aug.grayscale(i[None])[0]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images.numpy())]
    assert all(g != k for g, k in zip(grey, kept)) and 10 < sum(grey) < 54


def test_gaussian_blur_by_hand():
    impulse = np.zeros((1, 9, 9, 3), np.float32)
    impulse[0, 4, 4] = 1.0
    sigma = 1.3
    out = aug.gaussian_blur(tf.constant(impulse), tf.constant([sigma]), 5).numpy()
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    taps /= taps.sum()
    np.testing.assert_allclose(out[0, 2:7, 2:7, 0], np.outer(taps, taps), atol=1e-6)
    assert abs(out.sum() / 3 - 1.0) < 1e-5
    constant = tf.fill((2, 6, 6, 3), 0.3)
    np.testing.assert_allclose(aug.gaussian_blur(constant, tf.constant([0.5, 2.0]), 3), constant, atol=1e-6)
    mapped = _eager_and_mapped(lambda x, s: aug.random_gaussian_blur(x, s, kernel_size=3, p=0.5), tf.random.uniform((8, 6, 6, 3)))
    assert mapped.shape == (8, 6, 6, 3)
    assert [aug.blur_kernel_size(s) for s in (32, 64, 96)] == [3, 7, 11]


def test_normalize_by_hand():
    x = tf.constant([[[[0.5, 0.25, 1.0]]]])
    out = aug.normalize(x, (0.5, 0.5, 0.5), (0.25, 0.5, 0.25))
    np.testing.assert_allclose(out[0, 0, 0], [0.0, -0.5, 2.0], atol=1e-6)
    np.testing.assert_allclose(aug.normalize(x), x)


def test_augment_two_views():
    images = tf.cast(tf.random.uniform((4, 16, 16, 3), 0, 256, tf.int32), tf.uint8)
    view1, view2 = _eager_and_mapped(
        lambda x, s: kd.augment_two_views(x, s, (12, 12), mean=(0.5,) * 3, std=(0.25,) * 3), images
    )
    assert view1.shape == view2.shape == (4, 12, 12, 3)
    assert not np.allclose(view1, view2)
    # Normalised values of [0, 1] pixels.
    assert float(tf.reduce_min(view1)) >= -2.0 - 1e-5 and float(tf.reduce_max(view1)) <= 2.0 + 1e-5
    again = kd.augment_two_views(images, SEED, (12, 12), mean=(0.5,) * 3, std=(0.25,) * 3)
    np.testing.assert_allclose(again[0], view1)
