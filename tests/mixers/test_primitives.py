"""The mixing primitives: exact cases by hand and properties over random inputs."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix import mixers
from keras_amix.mixers import base, primitives


def _np(x):
    return ops.convert_to_numpy(x)


def test_mix_images_scalar_weight_by_hand():
    a = np.array([[[[2.0]]], [[[4.0]]]], "float32")  # (2, 1, 1, 1)
    b = np.array([[[[0.0]]], [[[8.0]]]], "float32")
    # 0.25 * 2 + 0.75 * 0 = 0.5;  0.25 * 4 + 0.75 * 8 = 7.0
    np.testing.assert_allclose(_np(mixers.mix_images(a, b, 0.25)).ravel(), [0.5, 7.0])


def test_mix_images_per_sample_weight_by_hand():
    a = np.ones((2, 1, 2, 1), "float32")
    b = np.zeros((2, 1, 2, 1), "float32")
    # weight (B,) = [0.1, 0.9]: sample 0 is 0.1 everywhere, sample 1 is 0.9.
    out = _np(mixers.mix_images(a, b, np.array([0.1, 0.9], "float32")))
    np.testing.assert_allclose(out[:, 0, :, 0], [[0.1, 0.1], [0.9, 0.9]], rtol=1e-6)


def test_mix_images_mask_weight_by_hand():
    a = np.array([[[[10.0], [20.0]]]], "float32")  # (1, 1, 2, 1)
    b = np.array([[[[30.0], [40.0]]]], "float32")
    mask = np.array([[[[1.0], [0.5]]]], "float32")
    # pixel 0: 1 * 10 + 0 * 30 = 10; pixel 1: 0.5 * 20 + 0.5 * 40 = 30
    np.testing.assert_allclose(_np(mixers.mix_images(a, b, mask)).ravel(), [10.0, 30.0])


def test_mix_images_keeps_integer_dtype_and_rounds():
    a = np.array([[[[255]]], [[[1]]]], "uint8")
    b = np.array([[[[0]]], [[[2]]]], "uint8")
    out = mixers.mix_images(a, b, 0.5)
    assert keras.backend.standardize_dtype(out.dtype) == "uint8"
    # 127.5 rounds to 128 (half to even); 1.5 rounds to 2.
    np.testing.assert_array_equal(_np(out).ravel(), [128, 2])


def test_mix_labels_by_hand():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "float32")
    perm = np.array([1, 2, 0])
    # scalar λ = 0.75: row 0 = 0.75 e0 + 0.25 e1, row 2 = 0.75 e2 + 0.25 e0.
    out = _np(mixers.mix_labels(y, perm, 0.75))
    np.testing.assert_allclose(out, [[0.75, 0.25, 0], [0, 0.75, 0.25], [0.25, 0, 0.75]])
    # per-row λ = (1, 0, 0.5): row 0 = e0, row 1 = y[2] = e2, row 2 = 0.5 e2 + 0.5 e0.
    out = _np(mixers.mix_labels(y, perm, np.array([1.0, 0.0, 0.5], "float32")))
    np.testing.assert_allclose(out, [[1, 0, 0], [0, 0, 1], [0.5, 0, 0.5]])


def test_properties_over_random_inputs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.normal(size=(4, 3, 3, 2)).astype("float32")
        b = rng.normal(size=(4, 3, 3, 2)).astype("float32")
        np.testing.assert_array_equal(_np(mixers.mix_images(a, b, 1.0)), a)
        np.testing.assert_array_equal(_np(mixers.mix_images(a, b, 0.0)), b)
        np.testing.assert_array_equal(_np(mixers.mix_images(a, b, np.ones(4, "float32"))), a)
        mask = rng.random((4, 3, 3, 1)).astype("float32")
        expected = mask * a + (1 - mask) * b
        np.testing.assert_allclose(_np(mixers.mix_images(a, b, mask)), expected, rtol=1e-6)
        y = np.eye(5, dtype="float32")[rng.integers(0, 5, 4)]
        perm = rng.permutation(4)
        lam = rng.random(4).astype("float32")
        out = _np(mixers.mix_labels(y, perm, lam))
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(out, lam[:, None] * y + (1 - lam[:, None]) * y[perm],
                                   rtol=1e-6)


def test_sampling_helpers_live_in_primitives_and_stay_importable_from_base():
    assert base.sample_lambda is primitives.sample_lambda is mixers.sample_lambda
    assert base.sample_permutation is primitives.sample_permutation is mixers.sample_permutation
    seed = keras.random.SeedGenerator(0)
    lam = _np(primitives.sample_lambda(seed, 1.0, (64,)))
    assert np.all((lam >= 0) & (lam <= 1))
    perm = _np(primitives.sample_permutation(seed, 7, no_repeat=True))
    assert sorted(perm.tolist()) == list(range(7)) and np.all(perm != np.arange(7))


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_mixer_mixes_through_the_primitive(dtype):
    images = (np.random.default_rng(1).random((4, 8, 8, 3)) * 255).astype(dtype)
    mixer = mixers.get("mixup", alpha=1.0, seed=0, num_classes=2, per_sample=True)
    params = mixer.sample_params(images)
    paired = _np(ops.take(images, params["perm"], axis=0))
    np.testing.assert_array_equal(_np(mixer.mix_images(images, paired, params)),
                                  _np(mixers.mix_images(images, paired, params["lam"])))
