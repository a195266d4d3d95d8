"""The NumPy MoCo v2 views (`numpy_augment`) and `TwoViewBatches` against their
tf.data twins (`augment`, `two_view_pipeline`)."""

import numpy as np
import pytest

from keras_amix.data import arrays
from keras_amix.data import crop
from keras_amix.data import numpy_augment as npa

tf = pytest.importorskip("tensorflow")
from keras_amix.data import augment  # noqa: E402  (needs TensorFlow)
from keras_amix.data.random_resized_crop import _TF  # noqa: E402


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.random((6, 9, 7, 3), dtype=np.float32)


def _close(numpy_value, tf_value, atol=2e-6):
    np.testing.assert_allclose(numpy_value, np.asarray(tf_value), atol=atol, rtol=0)


def test_colour_ops_equal_the_tf_ops(images):
    factor = np.array([0.6, 1.0, 1.4, 0.9, 1.2, 0.0], np.float32)
    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation"):
        _close(getattr(npa, name)(images, factor), getattr(augment, name)(images, factor))
    delta = np.array([-0.1, 0.0, 0.05, 0.1, -0.03, 0.5], np.float32)
    _close(npa.adjust_hue(images, delta), augment.adjust_hue(images, delta), atol=1e-5)
    _close(npa.grayscale(images), augment.grayscale(images))


def test_hsv_conversions_equal_tf_image():
    rng = np.random.default_rng(1)
    rgb = rng.random((4, 5, 5, 3), dtype=np.float32)
    rgb[0, 0, 0] = 0.0  # black: value 0
    rgb[0, 0, 1] = 0.5  # grey: no hue
    rgb[0, 0, 2] = (1.0, 0.2, 1.0)  # max shared by red and blue
    _close(npa.rgb_to_hsv(rgb), tf.image.rgb_to_hsv(rgb), atol=1e-6)
    hsv = npa.rgb_to_hsv(rgb)
    _close(npa.hsv_to_rgb(hsv), tf.image.hsv_to_rgb(hsv), atol=1e-6)
    _close(npa.hsv_to_rgb(hsv), rgb, atol=1e-5)  # a round trip


@pytest.mark.parametrize("kernel", [3, 5])
def test_gaussian_blur_equals_the_tf_op(images, kernel):
    sigma = np.linspace(0.1, 2.0, len(images)).astype(np.float32)
    _close(npa.gaussian_blur(images, sigma, kernel), augment.gaussian_blur(images, sigma, kernel))


def test_crop_math_gives_the_same_boxes_and_pixels_in_numpy_and_tf(images):
    rng = np.random.default_rng(2)
    u_area = rng.random((6, 10), dtype=np.float32)
    u_ratio = rng.random((6, 10), dtype=np.float32)
    u_pos = rng.random((6, 2), dtype=np.float32)
    u_area[0] = 1.0  # an area that never fits with an extreme ratio: the fallback
    u_ratio[0] = 1.0
    args = (9, 7, (0.2, 1.0), (3.0 / 4.0, 4.0 / 3.0))
    boxes = crop.boxes_from_uniforms(crop.NUMPY_OPS, u_area, u_ratio, u_pos, *args)
    np.testing.assert_array_equal(
        boxes, np.asarray(crop.boxes_from_uniforms(_TF, u_area, u_ratio, u_pos, *args)))
    _close(crop.crop_and_resize(crop.NUMPY_OPS, images, boxes, 5, 6),
           crop.crop_and_resize(_TF, tf.constant(images), tf.constant(boxes), 5, 6))


def test_moco_view_shape_range_seed_and_grey_probability():
    rng = np.random.default_rng(3)
    batch = rng.random((400, 12, 12, 3), dtype=np.float32)
    view = npa.moco_v2_view(batch, np.random.default_rng(7), (8, 8))
    assert view.shape == (400, 8, 8, 3) and view.dtype == np.float32
    assert view.min() >= 0.0 and view.max() <= 1.0
    np.testing.assert_array_equal(view, npa.moco_v2_view(batch, np.random.default_rng(7), (8, 8)))
    assert not np.array_equal(view, npa.moco_v2_view(batch, np.random.default_rng(8), (8, 8)))
    # Random colour images are grey only where random_grayscale (p = 0.2) fired.
    grey = np.all(np.abs(view - view[..., :1]) < 1e-6, axis=(1, 2, 3))
    assert 0.13 < grey.mean() < 0.27  # 400 draws: ± 3.5 binomial standard deviations


@pytest.fixture
def data():
    rng = np.random.default_rng(4)
    return rng.integers(0, 256, (20, 10, 10, 3), dtype=np.uint8), np.arange(20) % 4


def test_two_view_batches_contract(data):
    images, labels = data
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ds = arrays.TwoViewBatches(images, labels, batch_size=8, num_classes=4, image_size=6,
                               mean=mean, std=std, seed=5, epochs=3, with_ids=True)
    assert ds.steps_per_epoch == 2 and len(ds) == 6
    inputs, y = ds[3]
    assert sorted(inputs) == ["ids", "view1", "view2"]
    assert inputs["view1"].shape == inputs["view2"].shape == (8, 6, 6, 3)
    assert inputs["view1"].dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, labels[inputs["ids"]])
    assert not np.array_equal(inputs["view1"], inputs["view2"])
    # Normalised: back in [0, 1] once the statistics are undone.
    raw = inputs["view1"] * np.float32(std) + np.float32(mean)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # Each pass is a permutation of distinct rows (the last partial batch dropped).
    ids = np.concatenate([ds[i][0]["ids"] for i in range(2)])
    assert len(set(ids.tolist())) == 16
    # A data set resumed at epoch 1 yields the batches of the uninterrupted one.
    resumed = arrays.TwoViewBatches(images, labels, batch_size=8, num_classes=4, image_size=6,
                                    mean=mean, std=std, seed=5, epochs=3, initial_epoch=1,
                                    with_ids=True)
    for i in range(len(resumed)):
        for key in ("view1", "view2", "ids"):
            np.testing.assert_array_equal(resumed[i][0][key], ds[i + 2][0][key])
    assert "ids" not in arrays.TwoViewBatches(images, labels, batch_size=8, num_classes=4,
                                              image_size=6)[0][0]


def test_two_view_batches_bad_input(data):
    images, labels = data
    with pytest.raises(ValueError, match=r"`image_size` must be a positive int.*\(6, 0\)"):
        arrays.TwoViewBatches(images, labels, batch_size=8, num_classes=4, image_size=(6, 0))
    with pytest.raises(ValueError, match=r"`scale` must be a pair"):
        arrays.TwoViewBatches(images, labels, batch_size=8, num_classes=4, image_size=6,
                              scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="batch_size"):
        arrays.TwoViewBatches(images, labels, batch_size=21, num_classes=4, image_size=6)
