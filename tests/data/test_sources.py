"""Dataset sources: digits, image folders, official layouts, .npz, TFDS (mocked)."""

import os
import re
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_amix import data as kd
from keras_amix.data import registry

pytestmark = pytest.mark.backend_independent


def _png(path, value, size=(8, 8), mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shape = size + ((3,) if mode == "RGB" else ())
    Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)


def _collect(ds):
    return [tuple(np.asarray(t) for t in element) for element in ds]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    # Class dirs deliberately created out of order; one grey image.
    for split, count in (("train", 3), ("test", 1)):
        for c, name in enumerate(("zebra", "ant")):
            for i in range(count):
                _png(str(root / split / name / f"{i:02d}.png"), 10 * c + i + (100 if split == "test" else 0))
    _png(str(root / "train" / "ant" / "gray.png"), 77, mode="L")
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    return str(root)


def test_digits_split_is_stratified_reproducible_and_a_partition():
    from sklearn.datasets import load_digits

    train = _collect(kd.load("digits", "train"))
    test = _collect(kd.load("digits", "test"))
    assert len(train) == 1437 and len(test) == 360
    assert train[0][0].shape == (8, 8, 3) and train[0][0].dtype == np.uint8
    assert all((x[..., 0] == x[..., 2]).all() for x, _ in train[:20])
    # Reproducible.
    again = _collect(kd.load("digits", "train"))
    assert all((a[0] == b[0]).all() and a[1] == b[1] for a, b in zip(train, again))
    # A partition of the 1,797 digits (as a multiset of image+label).
    full = load_digits()
    full_keys = sorted(
        np.round(im * 255 / 16).astype(np.uint8).tobytes() + bytes([t])
        for im, t in zip(full.images, full.target)
    )
    split_keys = sorted(x[..., 0].tobytes() + bytes([int(y)]) for x, y in train + test)
    assert split_keys == full_keys
    # Stratified: each class keeps 80 % (+- 1) in train.
    train_counts = np.bincount([int(y) for _, y in train], minlength=10)
    full_counts = np.bincount(full.target, minlength=10)
    assert np.all(np.abs(train_counts - 0.8 * full_counts) <= 1)


@pytest.mark.parametrize("name", ["digits", "scattered_digits"])
def test_digits_registry_statistics_match_train_split(name):
    images = np.stack([x for x, _ in _collect(kd.load(name, "train"))]) / 255.0
    info = kd.info(name)
    assert images.shape[1:3] == info.image_size
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), info.mean, atol=1e-3)
    np.testing.assert_allclose(images.std(axis=(0, 1, 2)), info.std, atol=1e-3)


@pytest.mark.parametrize("split", ["train", "test"])
def test_scattered_digits_hold_each_digit_intact_somewhere(split):
    """Each image is its split's digit, pixel for pixel, pasted into a black canvas
    at a position of its own (not one shared place), the same on every load."""
    digits = _collect(kd.load("digits", split))
    scattered = _collect(kd.load("scattered_digits", split))
    assert len(scattered) == len(digits)
    offsets = set()
    for (small, label), (big, big_label) in zip(digits, scattered):
        assert int(label) == int(big_label) and big.shape == (24, 24, 3)
        windows = [(top, left) for top in range(17) for left in range(17)
                   if np.array_equal(big[top:top + 8, left:left + 8], small)]
        assert windows, "digit not found"
        top, left = windows[0]
        rest = big.copy()
        rest[top:top + 8, left:left + 8] = 0
        assert not rest.any()  # black outside the digit
        offsets.add((top, left))
    assert len(offsets) > 100  # spread over the canvas
    again = _collect(kd.load("scattered_digits", split))
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(scattered, again))


def test_ids_are_stable_unique_and_survive_shuffling(folder):
    plain = _collect(kd.load(folder, "train", with_ids=True))
    ids = [int(i) for _, _, i in plain]
    assert ids == list(range(len(plain)))
    by_id = {int(i): (x.tobytes(), int(y)) for x, y, i in plain}
    for _ in range(2):
        shuffled = _collect(kd.load(folder, "train", with_ids=True, shuffle_files=True))
        assert sorted(int(i) for _, _, i in shuffled) == ids
        assert all(by_id[int(i)] == (x.tobytes(), int(y)) for x, y, i in shuffled)
    digits = _collect(kd.load("digits", "test", with_ids=True))
    assert [int(i) for _, _, i in digits] == list(range(360))


def test_image_folder_labels_sorted_grey_expanded_and_limit(folder):
    train = _collect(kd.load(folder, "train"))
    # "ant" < "zebra": ant = 0. Files sorted: 00, 01, 02, gray.
    assert [int(y) for _, y in train] == [0, 0, 0, 0, 1, 1, 1]
    assert [int(x[0, 0, 0]) for x, _ in train] == [10, 11, 12, 77, 0, 1, 2]
    grey = train[3][0]
    assert grey.shape == (8, 8, 3) and (grey == 77).all()
    limited = _collect(kd.load(folder, "train", per_class_limit=2))
    assert [int(x[0, 0, 0]) for x, _ in limited] == [10, 11, 0, 1]
    # Same data through data_dir.
    parent = os.path.dirname(folder)
    via_dir = _collect(kd.load("imgs", "test", data_dir=parent))
    via_alias = _collect(kd.load("folder", "test", data_dir=folder))
    assert [int(y) for _, y in via_dir] == [int(y) for _, y in via_alias] == [0, 1]
    info = kd.info(folder)
    assert info.num_classes == 2 and info.image_size == (8, 8)
    assert set(info.splits) == {"train", "test"}
    assert info.num_examples == {"test": 2, "train": 7}
    assert info.mean == registry.IMAGENET_MEAN


def test_split_labels_are_loads_labels_without_decoding(folder, tmp_path, monkeypatch):
    """`split_labels` gives the labels `load` yields, in its order, for every
    source that knows them before decoding; None for TFDS."""
    for limit in (None, 2):
        loaded = [int(y) for _, y in _collect(kd.load(folder, "train", per_class_limit=limit))]
        assert kd.split_labels(folder, "train", per_class_limit=limit).tolist() == loaded
    assert kd.split_labels(folder, "train").tolist() == [0, 0, 0, 0, 1, 1, 1]
    path = str(tmp_path / "a.npz")
    np.savez(path, x_train=np.zeros((5, 4, 4, 3), np.uint8), y_train=[2, 0, 2, 1, 0])
    assert kd.split_labels(path, "train", per_class_limit=1).tolist() == [2, 0, 1]
    digits = [int(y) for _, y in _collect(kd.load("digits", "test"))]
    assert kd.split_labels("digits", "test").tolist() == digits
    assert kd.split_labels("cifar10", "train", data_dir=str(tmp_path)) is None
    monkeypatch.setattr(tf.io, "decode_image", lambda *a, **k: pytest.fail("decoded"))
    kd.split_labels(folder, "test")
    with pytest.raises(ValueError, match="val"):
        kd.split_labels(folder, "val")


def test_cifar10_like_folder_gets_cifar_statistics(tmp_path):
    for name in registry.CIFAR10_CLASSES:
        _png(str(tmp_path / "c" / "train" / name / "0.png"), 5, size=(32, 32))
    info = kd.info(str(tmp_path / "c"))
    assert info.mean == registry.CIFAR10_MEAN and info.augment == "cifar"


def test_users_data_sets_take_the_augmentation_of_their_size(tmp_path):
    """A folder or .npz of CIFAR-sized images trains with the CIFAR augmentation
    (pad-crop, flip); larger or differing images with the random resized crop."""
    for size, expected in ((28, "cifar"), (32, "cifar"), (33, "imagenet"), (64, "imagenet")):
        _png(str(tmp_path / f"f{size}" / "train" / "a" / "0.png"), 5, size=(size, size))
        assert kd.info(str(tmp_path / f"f{size}")).augment == expected, size
        path = str(tmp_path / f"{size}.npz")
        np.savez(path, x_train=np.zeros((2, size, size), np.uint8), y_train=[0, 1])
        assert kd.info(path).augment == expected, size
    _png(str(tmp_path / "mixed" / "train" / "a" / "0.png"), 5, size=(20, 20))
    _png(str(tmp_path / "mixed" / "train" / "b" / "0.png"), 5, size=(24, 20))
    assert kd.info(str(tmp_path / "mixed")).augment == "imagenet"  # sizes differ


def test_tiny_imagenet_layout(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    os.makedirs(root)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for c, wnid in enumerate(sorted(wnids)):
        for i in range(2):
            _png(str(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"), 40 * c + i)
    _png(str(root / "val" / "images" / "val_0.JPEG"), 200)
    _png(str(root / "val" / "images" / "val_1.JPEG"), 201)
    (root / "val" / "val_annotations.txt").write_text(
        "val_1.JPEG\tn01\t0\t0\t8\t8\nval_0.JPEG\tn02\t0\t0\t8\t8\n"
    )
    train = _collect(kd.load(str(root), "train"))
    assert [(int(x[0, 0, 0]), int(y)) for x, y in train] == [(0, 0), (1, 0), (40, 1), (41, 1)]
    val = _collect(kd.load("tiny_imagenet", "val", data_dir=str(tmp_path)))
    assert [(int(x[0, 0, 0]), int(y)) for x, y in val] == [(200, 1), (201, 0)]
    assert kd.info(str(root)).num_classes == 2
    assert kd.info("tiny_imagenet").num_examples["train"] == 100000


def test_fgvc_aircraft_layout_with_spaces(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    for i, value in enumerate((1, 2, 3)):
        _png(str(data / "images" / f"00{i}.jpg"), 50 * value)
    (data / "variants.txt").write_text("Boeing 707-320\nA300B4\nCessna 172\n")
    (data / "images_variant_trainval.txt").write_text(
        "000 Cessna 172\n001 Boeing 707-320\n"
    )
    (data / "images_variant_test.txt").write_text("002 A300B4\n")
    trainval = _collect(kd.load("fgvc_aircraft", "trainval", data_dir=str(tmp_path)))
    assert [int(y) for _, y in trainval] == [2, 0]
    test = _collect(kd.load(str(tmp_path / "fgvc-aircraft-2013b"), "test"))
    assert [int(y) for _, y in test] == [1]
    assert abs(int(test[0][0][0, 0, 0]) - 150) <= 3  # JPEG
    with pytest.raises(ValueError, match="Available splits"):
        kd.load("fgvc_aircraft", "train", data_dir=str(tmp_path))


def test_npz_splits_single_split_and_label_range(tmp_path):
    path = str(tmp_path / "d.npz")
    x = np.arange(4 * 4 * 4, dtype=np.uint8).reshape(4, 4, 4)
    np.savez(path, x_train=x, y_train=np.array([0, 1, 2, 1]), x_test=x[:2], y_test=np.array([2, -1]))
    train = _collect(kd.load(path, "train", with_ids=True))
    assert train[1][0].shape == (4, 4, 3) and (train[1][0][..., 2] == x[1]).all()
    assert [int(i) for *_, i in train] == [0, 1, 2, 3]
    assert [int(y) for _, y in _collect(kd.load(path, "test"))] == [2, -1]
    assert kd.info(path).num_classes == 3
    single = str(tmp_path / "s.npz")
    np.savez(single, images=np.ones((2, 3, 3, 3), np.float32), labels=np.array([0, 1]))
    images = _collect(kd.load(single, "train"))
    assert (images[0][0] == 255).all()
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, x_train=x, y_train=np.array([0, 1, 5, -3]), num_classes=3)
    with pytest.raises(ValueError, match=r"Labels out of range.*\[-3, 5\]"):
        kd.load(bad, "train")


def test_npz_reads_the_same_on_both_input_paths(tmp_path):
    """One reader (keras_amix.data.npz): the tf.data source and the TF-free
    `arrays.load_npz` give the same images, labels and info for a file in
    keras.datasets' layout (float [0, 1] grey images, (N, 1) labels)."""
    from keras_amix.data import arrays

    path = str(tmp_path / "k.npz")
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((6, 5, 5, 1)), y_train=np.array([[0], [2], [1], [0], [2], [1]]),
             x_test=rng.random((2, 5, 5, 1)).astype(np.float32), y_test=np.array([[1], [-1]]))
    splits, info = arrays.load_npz(path)
    assert info == kd.info(path) and info.num_classes == 3
    for split, (images, labels) in splits.items():
        tf_pairs = _collect(kd.load(path, split))
        np.testing.assert_array_equal(np.stack([x for x, _ in tf_pairs]), images)
        assert [int(y) for _, y in tf_pairs] == labels.tolist()
        assert kd.split_labels(path, split).tolist() == labels.tolist()
    assert splits["test"][1].tolist() == [1, -1] and splits["train"][0].shape == (6, 5, 5, 3)


def test_errors_name_argument_value_and_allowed(tmp_path, folder):
    with pytest.raises(ValueError, match=r"name_or_path='nope'.*cifar10.*digits"):
        kd.load("nope", "train")
    with pytest.raises(ValueError, match=r"split='valid'.*\['train', 'test'\]"):
        kd.load("digits", "valid")
    with pytest.raises(ValueError, match=r"split='val'.*Available splits"):
        kd.load(folder, "val")
    missing = str(tmp_path / "missing" / "dir")
    with pytest.raises(ValueError, match="Missing folder.*missing/dir"):
        kd.load(missing, "train")
    os.makedirs(tmp_path / "empty" / "train" / "a")
    with pytest.raises(ValueError, match="Empty folder"):
        kd.load(str(tmp_path / "empty"), "train")
    with pytest.raises(ValueError, match="data_dir"):
        kd.load("tiny_imagenet", "train")
    with pytest.raises(ValueError, match="per_class_limit"):
        kd.load("digits", "train", per_class_limit=0)


def test_tfds_not_prepared_fails_fast_and_names_folder(tmp_path):
    start = time.time()
    with pytest.raises(ValueError) as error:
        kd.load("cifar10", "train", data_dir=str(tmp_path))
    assert time.time() - start < 10
    message = str(error.value)
    assert "cifar10" in message and str(tmp_path) in message and "download=True" in message


def test_tfds_mocked(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        ds = kd.load("cifar10", "train", data_dir=str(tmp_path), download=True, with_ids=True)
        elements = _collect(ds)
    assert len(elements) == 5
    image, label, sample_id = elements[3]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert label.dtype == np.int64 and 0 <= label < 10 and int(sample_id) == 3
    assert ds.element_spec[0].shape == (32, 32, 3)
    with pytest.raises(ValueError, match=r"split='validation'.*\['train', 'test'\]"):
        kd.load("cifar10", "validation", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="shuffle_files"):
        kd.load("stl10", "train", with_ids=True, shuffle_files=True, data_dir=str(tmp_path))


def test_npz_non_finite_pixels_are_refused_with_file_and_count(tmp_path):
    path = str(tmp_path / "nan.npz")
    images = np.random.default_rng(0).uniform(0, 1, (3, 4, 4, 3)).astype(np.float32)
    images[1, 2, 3, 0] = np.nan
    images[2, 0, 0, 1] = np.inf
    np.savez(path, images=images, labels=np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"nan\.npz.* 2 non-finite pixel"):
        kd.load(path, "train")
    images[1, 2, 3, 0] = images[2, 0, 0, 1] = 0.5
    np.savez(path, images=images, labels=np.array([0, 1, 0]))
    loaded = _collect(kd.load(path, "train"))
    # The [0, 1] float range is kept: no 0/1 image from a NaN maximum.
    assert 0 < int(loaded[0][0].max()) <= 255 and len(np.unique(loaded[0][0])) > 2


def test_empty_class_folder_is_refused_with_its_name(folder):
    os.makedirs(os.path.join(folder, "train", "yak"))
    with open(os.path.join(folder, "train", "yak", "readme.txt"), "w") as f:
        f.write("no images here")
    with pytest.raises(ValueError, match=r"Empty folder: class folder '.*train/yak'"):
        kd.load(folder, "train")
    with pytest.raises(ValueError, match=r"train/yak"):
        kd.info(folder)


@pytest.mark.parametrize(
    "content,why",
    [
        (b"this is not an image at all", "is not a JPEG/PNG"),
        (b"", "is empty"),
        ("truncated", "cannot be decoded"),
    ],
)
def test_corrupt_image_file_is_named_or_skipped(folder, content, why):
    bad = os.path.join(folder, "train", "zebra", "01.png")
    if content == "truncated":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 9).save(bad[:-4] + ".jpg", quality=90)
        os.remove(bad)
        bad = bad[:-4] + ".jpg"
        data = open(bad, "rb").read()
        content = data[: len(data) // 2]
    with open(bad, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=rf"1 of the 7 image files.*'{re.escape(bad)}' {why}.*skip_corrupt=True"):
        kd.load(folder, "train")
    kept = _collect(kd.load(folder, "train", skip_corrupt=True, with_ids=True))
    assert len(kept) == 6 and [int(i) for *_, i in kept] == list(range(6))
    # The other split is untouched.
    assert len(_collect(kd.load(folder, "test"))) == 2


def test_header_check_alone_for_large_splits(folder, monkeypatch):
    from keras_amix.data import sources

    bad = os.path.join(folder, "train", "ant", "00.png")
    data = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(data[:20])  # a valid PNG signature, truncated body
    monkeypatch.setattr(sources, "DECODE_CHECK_LIMIT", 3)
    kd.load(folder, "train")  # header only: accepted (the decode would fail in fit)
    monkeypatch.setattr(sources, "DECODE_CHECK_LIMIT", 100)
    with pytest.raises(ValueError, match=r"00\.png' cannot be decoded"):
        kd.load(folder, "train")
