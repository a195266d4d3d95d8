"""`keras_amix.data.arrays`: the TF-free .npz reader and `ArrayBatches`."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_amix.data import arrays

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _batches(n=40, size=8, **kwargs):
    """Images whose every pixel holds the image's index (its label too), so a
    batch shows which images it holds even after augmentation."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                             (n, size, size, 3)).copy()
    kwargs = dict(dict(batch_size=8, num_classes=n, training=True, seed=0), **kwargs)
    return arrays.ArrayBatches(images, np.arange(n), **kwargs)


def _ids(batch):
    return batch[1].argmax(-1).tolist()


def test_one_image_by_hand():
    image = np.zeros((1, 2, 2, 3), np.uint8)
    image[0, 0, 0] = (255, 51, 0)
    ds = arrays.ArrayBatches(image, np.array([2]), batch_size=1, num_classes=3,
                             training=False, mean=(0.5, 0.2, 0.0), std=(0.25, 0.5, 1.0))
    x, y = ds[0]
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.shape == (1, 2, 2, 3) and len(ds) == 1
    np.testing.assert_allclose(x[0, 0, 0], [2.0, 0.0, 0.0], atol=1e-6)  # (x/255 - m) / s
    np.testing.assert_allclose(x[0, 1, 1], [-2.0, -0.4, 0.0], atol=1e-6)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 1.0]])
    # No statistics: x / 255.
    plain = arrays.ArrayBatches(image, np.array([2]), batch_size=1, num_classes=3,
                                training=False)[0][0]
    np.testing.assert_allclose(plain[0, 0, 0], [1.0, 0.2, 0.0], atol=1e-6)


def test_evaluation_is_one_pass_in_order_with_the_remainder():
    ds = _batches(n=42, training=False, epochs=5)
    assert len(ds) == 6 and ds.steps_per_epoch == 6
    assert sum((_ids(ds[i]) for i in range(6)), []) == list(range(42))
    with pytest.raises(IndexError):
        ds[6]


def test_training_drops_the_remainder_and_each_pass_is_a_permutation():
    ds = _batches(n=42, epochs=3)
    assert ds.steps_per_epoch == 5 and len(ds) == 15
    passes = [sum((_ids(ds[e * 5 + i]) for i in range(5)), []) for e in range(3)]
    for order in passes:
        assert len(set(order)) == 40 and set(order) <= set(range(42))
    assert passes[0] != passes[1] != passes[2]  # a new order per epoch


def test_same_seed_and_epoch_repeat_and_a_resumed_run_sees_the_same_batches():
    full = _batches(epochs=4, augment="cifar")
    again = _batches(epochs=4, augment="cifar")
    resumed = _batches(epochs=4, augment="cifar", initial_epoch=2)
    assert len(resumed) == 2 * full.steps_per_epoch
    for i in range(len(resumed)):
        j = 2 * full.steps_per_epoch + i
        for a, b, c in zip(full[j], again[j], resumed[i]):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    other_seed = _batches(epochs=4, seed=1)
    assert _ids(other_seed[0]) != _ids(full[0])


def test_cifar_augment_is_a_reflect_padded_crop_then_a_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    out = arrays.cifar_augment(images, np.random.default_rng(1))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")  # 8 // 8
    found = set()
    for k in range(len(images)):
        matches = [(top, left, flip) for top in range(3) for left in range(3)
                   for flip in (False, True)
                   if np.array_equal(out[k], (lambda w: w[:, ::-1] if flip else w)(
                       padded[k, top:top + 8, left:left + 8]))]
        assert matches, k
        found.update(matches)
    # Every offset in [0, 2 * pad] and both flips occur.
    assert {m[:2] for m in found} == {(t, l) for t in range(3) for l in range(3)}
    assert {m[2] for m in found} == {False, True}
    # A constant image stays constant (reflected borders hold the same value).
    const = np.full((4, 32, 32, 3), 7, np.uint8)
    np.testing.assert_array_equal(arrays.cifar_augment(const, np.random.default_rng(0)), const)


def test_cifar_augment_runs_in_training_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    kwargs = dict(batch_size=16, num_classes=1, seed=3)
    clean = arrays.ArrayBatches(images, np.zeros(16, int), training=False, augment="cifar",
                                **kwargs)[0][0]
    np.testing.assert_allclose(clean, images / 255.0, atol=1e-6)
    ds = arrays.ArrayBatches(images, np.zeros(16, int), training=True, augment="cifar",
                             **kwargs)
    order = np.random.default_rng([3, 0]).permutation(16)
    expected = arrays.cifar_augment(images[order], np.random.default_rng([3, 0, 0]))
    np.testing.assert_allclose(ds[0][0], expected / 255.0, atol=1e-6)
    plain = arrays.ArrayBatches(images, np.zeros(16, int), training=True, augment="none",
                                **kwargs)[0][0]
    np.testing.assert_allclose(plain, images[order] / 255.0, atol=1e-6)


@pytest.mark.training
def test_fit_reads_the_passes_in_order():
    """Keras' `fit(steps_per_epoch=...)` reads the passes back to back, so
    epoch e trains on pass e (the contract a resumed run relies on)."""

    class Recording(arrays.ArrayBatches):
        def __getitem__(self, index):
            self.calls.append(index)
            return super().__getitem__(index)

    images = np.zeros((16, 4, 4, 3), np.uint8)
    ds = Recording(images, np.arange(16) % 2, batch_size=4, num_classes=2, training=True,
                   seed=0, epochs=3, initial_epoch=1)
    ds.calls = []
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    model.compile("sgd", "categorical_crossentropy")
    model.fit(ds, epochs=3, initial_epoch=1, steps_per_epoch=ds.steps_per_epoch, verbose=0,
              shuffle=False)  # Keras' default shuffle=True permutes the batch indices
    assert ds.calls[-len(ds):] == list(range(len(ds)))


def test_refusals():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    kwargs = dict(batch_size=2, num_classes=2, training=True)
    with pytest.raises(ValueError, match="image_size"):
        arrays.ArrayBatches(images, np.zeros(4, int), image_size=16, **kwargs)
    arrays.ArrayBatches(images, np.zeros(4, int), image_size=8, **kwargs)
    with pytest.raises(ValueError, match="Label out of range"):
        arrays.ArrayBatches(images, np.array([0, 1, 2, 0]), **kwargs)
    with pytest.raises(ValueError, match="augment"):
        arrays.ArrayBatches(images, np.zeros(4, int), augment="imagenet", **kwargs)
    with pytest.raises(ValueError, match="uint8"):
        arrays.ArrayBatches(images.astype(np.float32), np.zeros(4, int), **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        arrays.ArrayBatches(images, np.zeros(4, int), **dict(kwargs, batch_size=5))
    with pytest.raises(ValueError, match="initial_epoch"):
        arrays.ArrayBatches(images, np.zeros(4, int), epochs=2, initial_epoch=2, **kwargs)


def test_load_npz(tmp_path):
    path = str(tmp_path / "d.npz")
    grey = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    np.savez(path, x_train=grey, y_train=np.array([0, 1, 2, 1, 0]),
             x_test=grey[:2, ..., None], y_test=np.array([3, 0]))
    splits, info = arrays.load_npz(path)
    assert sorted(splits) == ["test", "train"] and info.num_classes == 4
    assert info.image_size == (4, 4) and info.source == "npz"
    assert info.num_examples == {"train": 5, "test": 2}
    images, labels = splits["train"]
    assert images.shape == (5, 4, 4, 3) and labels.dtype == np.int64
    np.testing.assert_array_equal(images[..., 2], grey)  # grey repeated to RGB
    assert arrays.first_per_class(labels, 1).tolist() == [0, 1, 2]
    assert arrays.first_per_class(labels, 2).tolist() == [0, 1, 2, 3, 4]
    # Float images in [0, 255] and (N, 1) labels (keras.datasets' layout) are read as the
    # tf.data path reads them; other label shapes and out-of-range labels are refused.
    np.savez(path, x_train=grey.astype(np.float32), y_train=np.array([[0], [1], [2], [1], [0]]))
    splits, info = arrays.load_npz(path)
    np.testing.assert_array_equal(splits["train"][0][..., 0], grey)
    assert splits["train"][1].tolist() == [0, 1, 2, 1, 0] and info.num_classes == 3
    np.savez(path, x_train=grey, y_train=np.zeros((5, 2), int))
    with pytest.raises(ValueError, match=r"split 'train'.*shape \(5,\) or \(5, 1\).*\(5, 2\)"):
        arrays.load_npz(path)
    np.savez(path, x_train=grey, y_train=np.array([0, 1, 2, 7, 0]), num_classes=3)
    with pytest.raises(ValueError, match=r"out of range.*\[7\].*0\.\.2"):
        arrays.load_npz(path)
    np.savez(path, x_train=grey, y_train=np.array([0, 0.5, 1, 1, 0]))
    with pytest.raises(ValueError, match="must be integers.*float64"):
        arrays.load_npz(path)
    np.savez(path, images=grey)
    with pytest.raises(ValueError, match="x_<split>"):
        arrays.load_npz(path)


def test_npz_info_and_labels_read_no_images(tmp_path):
    """`npz.info` and `npz.labels` read the images' .npy headers only (the
    binaries call them at start-up, before the split itself is read): a file
    whose images cannot be loaded (pickled objects) still gives both, and
    `npz.split` of another split does not touch them."""
    from keras_amix.data import npz

    path = str(tmp_path / "lazy.npz")
    unreadable = np.empty((3, 5, 4), dtype=object)  # saved pickled; loads only with pickle
    np.savez(path, x_train=unreadable, y_train=np.array([0, 1, 1]),
             x_test=np.zeros((2, 5, 4), np.uint8), y_test=np.array([[1], [0]]))
    info = npz.info(path)
    assert info.image_size == (5, 4) and info.num_examples == {"train": 3, "test": 2}
    assert npz.labels(path, "train").tolist() == [0, 1, 1]
    images, labels, num_classes = npz.split(path, "test")
    assert images.shape == (2, 5, 4, 3) and labels.tolist() == [1, 0] and num_classes == 2
    with pytest.raises(ValueError, match="allow_pickle"):
        npz.split(path, "train")


@pytest.mark.own_backend("jax")
def test_needs_no_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np\n"
        "from keras_amix.data import arrays\n"
        "ds = arrays.ArrayBatches(np.zeros((8, 8, 8, 3), np.uint8), np.arange(8) % 2,\n"
        "    batch_size=4, num_classes=2, training=True, augment='cifar', epochs=2)\n"
        "x, y = ds[0]\n"
        "assert x.shape == (4, 8, 8, 3) and y.shape == (4, 2)\n"
        "import keras_amix.data as data\n"
        "try:\n"
        "    data.load\n"
        "except ImportError as err:\n"
        "    assert 'needs TensorFlow' in str(err)\n"
        "else:\n"
        "    raise AssertionError('keras_amix.data.load without TensorFlow')\n"
        "assert sys.modules['tensorflow'] is None\n"
        "print('ok')\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
