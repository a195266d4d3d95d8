"""Batched pipelines: structure, normalisation, one-hot, label checks, seeds."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_amix import data as kd

pytestmark = pytest.mark.backend_independent


def _arrays(n=8, size=8, labels=None, ids=False):
    images = np.arange(n * size * size * 3, dtype=np.int64).reshape(n, size, size, 3) % 256
    labels = np.arange(n) % 4 if labels is None else np.asarray(labels)
    parts = (images.astype(np.uint8), labels.astype(np.int64))
    if ids:
        parts += (np.arange(n, dtype=np.int64),)
    return tf.data.Dataset.from_tensor_slices(parts)


def test_eval_normalisation_and_one_hot_by_hand():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 51, 0
    ds = tf.data.Dataset.from_tensor_slices((image, np.array([2], np.int64)))
    x, y = next(iter(kd.pipeline(ds, batch_size=1, num_classes=3, training=False, mean=(0.5, 0.2, 0.1), std=(0.5, 0.5, 0.2))))
    np.testing.assert_allclose(x[0, 0, 0], [(1 - 0.5) / 0.5, (0.2 - 0.2) / 0.5, (0 - 0.1) / 0.2], atol=1e-6)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 1.0]])
    assert x.dtype == tf.float32 and y.dtype == tf.float32


def test_training_structure_ids_sizes_and_drop_remainder():
    ds = _arrays(n=10, ids=True)
    batches = list(kd.pipeline(ds, batch_size=4, num_classes=4, training=True, image_size=16, augment="cifar", seed=0))
    assert len(batches) == 2  # drop_remainder when training
    inputs, labels = batches[0]
    assert set(inputs) == {"images", "ids"}
    assert inputs["images"].shape == (4, 16, 16, 3) and labels.shape == (4, 4)
    np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0)
    # The ids still match the labels (label = id % 4).
    np.testing.assert_array_equal(tf.argmax(labels, 1), inputs["ids"] % 4)
    evaluation = list(kd.pipeline(ds, batch_size=4, num_classes=4, training=False, one_hot=False))
    assert [b[1].shape[0] for b in evaluation] == [4, 4, 2]
    np.testing.assert_array_equal(evaluation[0][0]["ids"], [0, 1, 2, 3])
    assert evaluation[0][1].dtype == tf.int64


def test_fixed_seed_repeats_and_epochs_differ():
    def first_two_epochs(seed):
        p = kd.pipeline(_arrays(n=8), batch_size=8, num_classes=4, training=True, augment="imagenet", image_size=6, seed=seed)
        return [next(iter(p))[0].numpy() for _ in range(2)]

    a, b = first_two_epochs(1), first_two_epochs(1)
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    assert not np.allclose(a[0], a[1])


def test_cifar_augment_shifts_and_flips_only():
    # One image, repeated: every output is a (possibly flipped) 1-pixel reflect shift.
    image = (np.arange(64).reshape(8, 8, 1) * 3).repeat(3, -1).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((np.stack([image] * 16), np.zeros(16, np.int64)))
    x, _ = next(iter(kd.pipeline(ds, batch_size=16, num_classes=1, training=True, augment="cifar", seed=0)))
    padded = np.pad(image / 255.0, [(1, 1), (1, 1), (0, 0)], mode="reflect")
    windows = [padded[dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    windows += [w[:, ::-1] for w in windows]
    for out in x.numpy():
        assert any(np.allclose(out, w, atol=1e-6) for w in windows)


@pytest.mark.parametrize("labels, one_hot", [([0, 4], True), ([0, -1], True), ([0, -2], False)])
def test_label_out_of_range_raises(labels, one_hot):
    ds = _arrays(n=2, labels=labels)
    p = kd.pipeline(ds, batch_size=2, num_classes=4, training=False, one_hot=one_hot)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Label out of range"):
        next(iter(p))


def test_unlabelled_allowed_without_one_hot():
    p = kd.pipeline(_arrays(n=2, labels=[-1, 3]), batch_size=2, num_classes=4, training=False, one_hot=False)
    np.testing.assert_array_equal(next(iter(p))[1], [-1, 3])


def test_variable_size_folder_images(tmp_path):
    for i, size in enumerate(((10, 14), (20, 12), (9, 9))):
        path = tmp_path / "train" / "a" / f"{i}.png"
        os.makedirs(path.parent, exist_ok=True)
        Image.fromarray(np.full(size + (3,), 100, np.uint8)).save(path)
    ds = kd.load(str(tmp_path), "train", with_ids=True)
    with pytest.raises(ValueError, match="image_size"):
        kd.pipeline(ds, batch_size=3, num_classes=1, training=True)
    for training in (True, False):
        for augment in (None, "imagenet", "cifar"):
            inputs, y = next(iter(kd.pipeline(ds, batch_size=3, num_classes=1, training=training, image_size=8, augment=augment)))
            assert inputs["images"].shape == (3, 8, 8, 3)
            np.testing.assert_allclose(inputs["images"], 100 / 255, atol=1e-5)
    inputs, labels = next(iter(kd.two_view_pipeline(ds, batch_size=3, image_size=8, mean=None, std=None, with_ids=True)))
    assert inputs["view1"].shape == inputs["view2"].shape == (3, 8, 8, 3)
    assert sorted(inputs["ids"].numpy().tolist()) == [0, 1, 2]


def test_imagenet_eval_resizes_shorter_side_and_centre_crops():
    # 16 x 32 image whose columns are x; size 8: shorter side -> round(8 / 0.875) = 9, 9 x 18, centre 8 x 8.
    image = np.tile(np.arange(32, dtype=np.uint8)[None, :, None], (16, 1, 3)) * 8
    ds = tf.data.Dataset.from_tensor_slices((image[None], np.zeros(1, np.int64)))
    x, _ = next(iter(kd.pipeline(ds, batch_size=1, num_classes=1, training=False, image_size=8, augment="imagenet")))
    expected = tf.image.resize(image[None].astype(np.float32) / 255.0, (9, 18))[:, 0:8, 5:13]
    np.testing.assert_allclose(x, expected, atol=1e-5)


def test_two_view_pipeline_structure():
    ds = _arrays(n=8, size=16, ids=True)
    inputs, labels = next(iter(kd.two_view_pipeline(ds, batch_size=4, image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3, seed=0)))
    assert set(inputs) == {"view1", "view2"} and labels.dtype == tf.int64
    assert inputs["view1"].shape == (4, 8, 8, 3)
    with pytest.raises(ValueError, match="with_ids"):
        kd.two_view_pipeline(_arrays(), batch_size=4, image_size=8, mean=None, std=None, with_ids=True)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"augment='autoaugment'"):
        kd.pipeline(_arrays(), batch_size=2, num_classes=4, training=True, augment="autoaugment")
    with pytest.raises(ValueError, match="batch_size=0"):
        kd.pipeline(_arrays(), batch_size=0, num_classes=4, training=True)
    with pytest.raises(ValueError, match=r"image_size=\(8, 0\)"):
        kd.pipeline(_arrays(), batch_size=2, num_classes=4, training=True, image_size=(8, 0))


def _variable_size(n=6):
    return tf.data.Dataset.range(n).map(
        lambda i: (tf.cast(tf.fill([(i % 3) + 6, (i % 2) + 6, 3], i * 10), tf.uint8), i % 4, i))


@pytest.mark.parametrize("build", [
    lambda **kw: kd.pipeline(_arrays(n=8, ids=True), batch_size=2, num_classes=4, training=True,
                             augment="cifar", **kw),
    lambda **kw: kd.pipeline(_variable_size(), batch_size=2, num_classes=4, training=True,
                             augment="imagenet", image_size=4, **kw),
    lambda **kw: kd.two_view_pipeline(_arrays(n=8, ids=True), batch_size=2, image_size=8,
                                      mean=None, std=None, with_ids=True, **kw),
], ids=["pipeline", "variable_size", "two_view"])
def test_epochs_are_a_function_of_seed_and_epoch(build):
    def passes(initial_epoch, seed=3):
        batches = list(build(seed=seed, epochs=3, initial_epoch=initial_epoch))
        return [(b[0]["ids"].numpy(), np.concatenate(
            [np.asarray(v).ravel() for k, v in sorted(b[0].items()) if k != "ids"]))
            for b in batches]

    full, resumed = passes(0), passes(2)
    per_pass = len(full) // 3
    assert len(resumed) == per_pass  # only the last pass
    for (ids_a, x_a), (ids_b, x_b) in zip(full[2 * per_pass:], resumed):
        np.testing.assert_array_equal(ids_a, ids_b)  # same order ...
        np.testing.assert_array_equal(x_a, x_b)  # ... and the same augmentations
    orders = [np.concatenate([ids for ids, _ in full[e * per_pass:(e + 1) * per_pass]])
              for e in range(3)]
    for order in orders:  # each pass is a permutation of the data
        assert sorted(order.tolist()) == sorted(orders[0].tolist())
    assert len({tuple(o) for o in orders}) > 1  # reshuffled every pass
    other = passes(0, seed=4)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(full, other))


def test_epochs_arguments_are_checked():
    with pytest.raises(ValueError, match="needs `epochs`"):
        kd.pipeline(_arrays(), batch_size=2, num_classes=4, training=True, seed=0, initial_epoch=1)
    with pytest.raises(ValueError, match=r"initial_epoch=3"):
        kd.pipeline(_arrays(), batch_size=2, num_classes=4, training=True, seed=0, epochs=3,
                    initial_epoch=3)
    with pytest.raises(ValueError, match="int `seed`"):
        kd.two_view_pipeline(_arrays(), batch_size=2, image_size=8, mean=None, std=None, epochs=2)
