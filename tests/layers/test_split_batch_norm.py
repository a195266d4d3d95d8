"""SplitBatchNormalization and the key reordering: MoCo's shuffling BN on one device."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix import backbones
from keras_amix.layers.split_batch_norm import (
    SplitBatchNormalization, deinterleave, interleave, num_splits)


def _layer(splits, x, momentum=0.9, epsilon=1e-5):
    layer = SplitBatchNormalization(splits, momentum=momentum, epsilon=epsilon)
    layer.build(x.shape)
    return layer


def test_training_normalises_each_group_by_its_own_statistics_by_hand():
    """Batch of 4, one channel, 1x1 images: groups {1, 3} and {5, 7}; each has
    mean ±1 from its centre and biased variance 1, so the output is
    (x - mean) / sqrt(1 + eps); the moving statistics move 10 % towards the
    mean over groups (mean (2 + 6) / 2 = 4, variance 1)."""
    x = np.array([1.0, 3.0, 5.0, 7.0], "float32").reshape(4, 1, 1, 1)
    layer = _layer(2, x)
    y = ops.convert_to_numpy(layer(x, training=True)).ravel()
    expected = np.array([-1.0, 1.0, -1.0, 1.0]) / np.sqrt(1.0 + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_mean), [0.1 * 4.0], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_variance),
                               [0.9 * 1.0 + 0.1 * 1.0], rtol=1e-6)
    # One BatchNorm over the whole batch would give mean 4, variance 5.
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    whole = ops.convert_to_numpy(plain(x, training=True)).ravel()
    assert not np.allclose(whole, y)


def test_groups_equal_separate_batch_norms_and_inference_is_batch_norm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 3, 4)).astype("float32") * 3 + 1
    layer = _layer(3, x)
    layer.gamma.assign(rng.normal(size=4).astype("float32"))
    layer.beta.assign(rng.normal(size=4).astype("float32"))
    y = ops.convert_to_numpy(layer(x, training=True))
    for g in range(3):
        part = x[2 * g:2 * g + 2]
        bn = keras.layers.BatchNormalization(epsilon=1e-5)
        bn.build(part.shape)
        bn.set_weights([ops.convert_to_numpy(layer.gamma), ops.convert_to_numpy(layer.beta),
                        np.zeros(4, "float32"), np.ones(4, "float32")])
        np.testing.assert_allclose(y[2 * g:2 * g + 2],
                                   ops.convert_to_numpy(bn(part, training=True)), atol=1e-5)
    # Inference: the moving statistics, as BatchNormalization.
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    bn.build(x.shape)
    bn.set_weights(layer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=False)),
                               ops.convert_to_numpy(bn(x, training=False)), atol=1e-6)


def test_one_split_is_batch_norm_and_bad_arguments_are_named():
    x = np.random.default_rng(1).normal(size=(4, 2, 2, 3)).astype("float32")
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(_layer(1, x)(x, training=True)),
                               ops.convert_to_numpy(bn(x, training=True)), atol=1e-6)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_splits"):
            SplitBatchNormalization(bad)
    with pytest.raises(ValueError, match="axis"):
        SplitBatchNormalization(2, axis=1)
    with pytest.raises(ValueError, match=r"batch \(4\) must be a multiple of num_splits=3"):
        _layer(3, x)(x, training=True)


def test_interleave_by_hand_and_deinterleave_inverts_it():
    x = np.arange(8).reshape(8, 1)
    # Groups of 2 for 4 splits: {0,1} {2,3} {4,5} {6,7} -> {0,2} {4,6} {1,3} {5,7}.
    assert ops.convert_to_numpy(interleave(x, 4)).ravel().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    # Groups of 4 for 2 splits: {0..3} {4..7} -> {0,4,1,5} {2,6,3,7}.
    assert ops.convert_to_numpy(interleave(x, 2)).ravel().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    y = np.random.default_rng(2).normal(size=(12, 3, 2)).astype("float32")
    for s in (1, 2, 3, 4, 6):
        np.testing.assert_array_equal(
            ops.convert_to_numpy(deinterleave(interleave(y, s), s)), y)
    with pytest.raises(ValueError, match="multiple of num_splits=5"):
        interleave(y, 5)


def test_reordered_groups_share_at_most_a_fair_share_with_the_old_groups():
    """The property the key encoder needs: after `interleave`, each group holds
    B / S^2 rows of each old group (B = 32, S = 4: 2 of 8), so a query's
    and its key's statistics come mostly from different samples."""
    rows = ops.convert_to_numpy(interleave(np.arange(32).reshape(32, 1), 4)).ravel()
    for g in range(4):
        old_groups = rows[8 * g:8 * g + 8] // 8
        assert np.bincount(old_groups, minlength=4).tolist() == [2, 2, 2, 2]


def test_backbone_with_split_bn_saves_loads_and_reports_its_splits(tmp_path):
    backbone = backbones.resnet(18, width=4, bn_splits=2)
    assert num_splits(backbone) == 2 and num_splits(backbones.resnet(18, width=4)) == 1
    x = np.random.default_rng(3).normal(size=(4, 8, 8, 3)).astype("float32")
    backbone(x, training=True)  # moves the moving statistics
    path = str(tmp_path / "b.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert num_splits(loaded) == 2
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x, training=False)),
                               ops.convert_to_numpy(backbone(x, training=False)), atol=1e-5)
    with pytest.raises(ValueError, match="bn_splits"):
        backbones.resnet(18, width=4, bn_splits=0)
    inputs = keras.Input((4,))
    mixed = keras.Model(inputs, SplitBatchNormalization(4)(SplitBatchNormalization(2)(inputs)))
    with pytest.raises(ValueError, match=r"share one num_splits; received \[2, 4\]"):
        num_splits(mixed)
