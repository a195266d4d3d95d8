"""Dataset sources: TFDS, image folders, official archive layouts, `.npz`, digits.

Every source yields unbatched `(image uint8 (H, W, 3), label int64)` or, with
`with_ids=True`, `(image, label, id int64)` where `id` is the index of the
sample within the split (after `per_class_limit`), stable across epochs and
across `shuffle_files` (the ids are attached before any shuffling). Unlabelled
samples (STL-10 `unlabelled`, the tiny-imagenet `test` split) carry label -1.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from keras_amix.data import npz
from keras_amix.data import registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Splits with at most this many files are also decoded once at `load` time
# (with the decoder `fit` will use); larger ones get the header check only.
DECODE_CHECK_LIMIT = 2048
_LOG = logging.getLogger(__name__)
_FOLDER_ALIASES = ("folder", "image_folder")


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def load(
    name_or_path,
    split,
    *,
    data_dir=None,
    download=False,
    with_ids=False,
    shuffle_files=False,
    per_class_limit=None,
    skip_corrupt=False,
):
    """Loads one split of a dataset as an unbatched `tf.data.Dataset`.

    Args:
        name_or_path: a registry name (`keras_amix.data.DATASETS`: "digits",
            "cifar10", "cifar100", "stl10", "caltech_birds2011",
            "imagenet2012", "tiny_imagenet", "fgvc_aircraft"), a path to an
            image-folder root (`root/<split>/<class>/<image>`), to an official
            tiny-imagenet-200 or FGVC-Aircraft archive folder (auto-detected),
            or to an `.npz` file (keys `x_<split>`/`y_<split>`, or
            `images`/`labels` for a single split called "train"). With
            `data_dir`, a name may also be a sub-folder of `data_dir`, or
            "folder" to read `data_dir` itself as an image folder.
        split: split name, e.g. "train", "test", "unlabelled", "val".
        data_dir: TFDS data folder for TFDS names (default: TFDS' own
            default); the archive root for "tiny_imagenet" / "fgvc_aircraft".
        download: TFDS only. When the dataset is not prepared in `data_dir`
            and `download=False`, a `ValueError` is raised at once (nothing
            touches the network); `download=True` downloads and prepares it.
        with_ids: also yield the int64 index of each sample within the split.
        shuffle_files: shuffle the file order (folders: the file list, ids
            stay attached; TFDS: the shards, incompatible with `with_ids`).
        per_class_limit: keep only the first N samples of each class (files
            sorted by name; arrays in their stored order). Not for TFDS.
        skip_corrupt: file sources only. Every listed file is checked before
            the dataset is built: its header must be a JPEG, PNG, BMP, GIF or
            WebP signature, and splits of at most `DECODE_CHECK_LIMIT` files
            are decoded once with TensorFlow's decoder (truncated files).
            With `skip_corrupt=False` (default) a bad file raises a
            `ValueError` naming it; with True bad files are dropped (before
            ids are assigned) and their count is logged as a warning.

    Raises:
        ValueError: unknown names / splits, an image folder whose class folder
            holds no images, an unreadable or corrupt image file (see
            `skip_corrupt`), `.npz` float images with NaN / inf pixels, `.npz`
            labels out of range.

    Returns:
        A `tf.data.Dataset` of `(image, label)` or `(image, label, id)`;
        images uint8 `(H, W, 3)`, labels and ids int64.

    Example:

    ```python
    ds = keras_amix.data.load("digits", "train", with_ids=True)
    image, label, sample_id = next(iter(ds))
    ```
    """
    _check_per_class_limit(per_class_limit)
    kind, key, root = _resolve(name_or_path, data_dir)
    if kind == "tfds":
        if per_class_limit is not None:
            raise ValueError(
                f"`per_class_limit` is not supported for TFDS datasets; "
                f"received per_class_limit={per_class_limit} for '{key}'. "
                "Use an image folder or an .npz file to subsample."
            )
        return _load_tfds(key, split, root, download, with_ids, shuffle_files)
    if kind == "digits":
        images, labels = _digits_split(split, key)
        return _from_arrays(images, labels, with_ids, per_class_limit, shuffle_files)
    if kind == "npz":
        images, labels, _ = npz.split(root, split)
        return _from_arrays(images, labels, with_ids, per_class_limit, shuffle_files)
    listing = _list_files(kind, root)
    _check_split(split, tuple(listing["splits"]), str(name_or_path))
    paths, labels = listing["splits"][split]
    paths, labels = _limit_per_class(paths, labels, per_class_limit)
    paths, labels = _check_image_files(paths, labels, skip_corrupt, f"split '{split}' of '{root}'")
    if not paths:
        raise ValueError(
            f"Split '{split}' of '{root}' has no images (after "
            f"per_class_limit={per_class_limit}); allowed extensions: "
            f"{IMAGE_EXTENSIONS}."
        )
    return _from_files(paths, labels, with_ids, shuffle_files)


def split_labels(name_or_path, split, *, data_dir=None, per_class_limit=None):
    """The labels of one split in the order `load` yields them (after
    `per_class_limit`), read without decoding an image: what a check on a
    truncation needs (`max_examples` of a split ordered by class keeps few
    classes). None for TFDS datasets, whose labels live in the records.

    Example:

    ```python
    labels = keras_amix.data.split_labels("digits", "train", per_class_limit=5)
    ```
    """
    _check_per_class_limit(per_class_limit)
    kind, key, root = _resolve(name_or_path, data_dir)
    if kind == "tfds":
        return None
    if kind == "digits":
        _, labels = _digits_split(split, key)
    elif kind == "npz":
        labels = npz.labels(root, split)
    else:
        listing = _list_files(kind, root)
        _check_split(split, tuple(listing["splits"]), str(name_or_path))
        _, labels = listing["splits"][split]
    labels = np.asarray(labels, dtype=np.int64)
    return labels[_limit_indices(labels, per_class_limit)]


def info(name_or_path, data_dir=None):
    """Returns the `DatasetInfo` of a registry name, folder or `.npz` file.

    Registry names return `keras_amix.data.DATASETS[name]` (TFDS datasets need
    not be prepared). Folders get their classes, splits and counts from the
    file tree, the native size from the first image of each class (`None` if
    they differ), the CIFAR-10 statistics when the folder is the CIFAR-10 copy
    (10 classes airplane ... truck, 32 x 32) and the ImageNet statistics
    otherwise. `.npz` files get ImageNet statistics too; pass `mean`/`std` to
    `pipeline` to override.
    """
    key = os.fspath(name_or_path).lower().replace("-", "_")
    if key in registry.DATASETS and data_dir is None and not os.path.exists(name_or_path):
        return registry.DATASETS[key]
    kind, key, root = _resolve(name_or_path, data_dir)
    if kind in ("tfds", "digits"):
        return registry.DATASETS[key]
    if kind == "npz":
        return npz.info(root)
    listing = _list_files(kind, root)
    classes = listing["classes"]
    splits = listing["splits"]
    first_per_class = {}
    for split_paths, split_labels in splits.values():
        for path, label in zip(split_paths, split_labels):
            if label >= 0 and label not in first_per_class:
                first_per_class[label] = path
    sizes = {_image_size(path) for path in first_per_class.values()}
    image_size = sizes.pop() if len(sizes) == 1 else None
    is_cifar10 = tuple(classes) == registry.CIFAR10_CLASSES and image_size == (32, 32)
    if kind in registry.DATASETS and image_size is None:
        image_size = registry.DATASETS[kind].image_size
    return registry.DatasetInfo(
        name=str(name_or_path),
        num_classes=len(classes),
        image_size=image_size,
        channels=3,
        mean=registry.CIFAR10_MEAN if is_cifar10 else registry.IMAGENET_MEAN,
        std=registry.CIFAR10_STD if is_cifar10 else registry.IMAGENET_STD,
        splits=tuple(splits),
        num_examples={name: len(paths) for name, (paths, _) in splits.items()},
        augment="cifar" if is_cifar10 else registry.augment_for(image_size),
        source=kind,
    )


# --------------------------------------------------------------------------
# Resolution and validation
# --------------------------------------------------------------------------


def _known_names():
    return sorted(registry.DATASETS)


def _check_split(split, allowed, name):
    if split not in allowed:
        raise ValueError(
            f"Unknown split: split='{split}' for dataset '{name}'. "
            f"Available splits: {list(allowed)}."
        )


def _check_per_class_limit(per_class_limit):
    if per_class_limit is not None and (
        not isinstance(per_class_limit, (int, np.integer)) or per_class_limit < 1
    ):
        raise ValueError(
            "`per_class_limit` must be None or a positive integer. "
            f"Received: per_class_limit={per_class_limit}"
        )


def _resolve(name_or_path, data_dir):
    """Returns `(kind, key, root)`; kind in tfds/digits/npz/folder/tiny_imagenet/fgvc_aircraft."""
    name = os.fspath(name_or_path)
    key = name.lower().replace("-", "_")
    if key in registry.DATASETS and not os.path.exists(name):
        source = registry.DATASETS[key].source
        if source == "tfds":
            return "tfds", key, data_dir
        if source == "digits":
            return "digits", key, None
        # tiny_imagenet / fgvc_aircraft: official archive folder in data_dir.
        if data_dir is None:
            raise ValueError(
                f"Dataset '{key}' is read from its official archive folder: "
                "pass data_dir=<folder> (the unpacked archive, e.g. "
                "'tiny-imagenet-200' or 'fgvc-aircraft-2013b'). "
                f"Received: data_dir={data_dir}"
            )
        root = _find_archive_root(key, data_dir)
        return key, key, root
    if key in _FOLDER_ALIASES and data_dir is not None:
        name = os.fspath(data_dir)
    elif not os.path.exists(name) and data_dir is not None:
        candidate = os.path.join(os.fspath(data_dir), name)
        if os.path.exists(candidate):
            name = candidate
    if name.endswith(".npz"):
        if not os.path.isfile(name):
            raise ValueError(
                f"Missing .npz file: name_or_path='{name}' does not exist."
            )
        return "npz", name, name
    if os.path.isdir(name):
        return _detect_layout(name), name, name
    if os.sep in name or (os.altsep and os.altsep in name) or os.path.exists(name):
        raise ValueError(
            f"Missing folder: name_or_path='{name}' is not a directory. "
            "Expected an image folder root/<split>/<class>/<image>, an "
            "official tiny-imagenet-200 or FGVC-Aircraft folder, or an .npz file."
        )
    raise ValueError(
        f"Unknown dataset: name_or_path='{name_or_path}'. Known names: "
        f"{_known_names()}; or pass a path to an image folder, an official "
        "tiny-imagenet-200 / FGVC-Aircraft folder or an .npz file."
    )


def _find_archive_root(key, data_dir):
    data_dir = os.fspath(data_dir)
    candidates = [data_dir]
    for child in ("tiny-imagenet-200", "fgvc-aircraft-2013b"):
        candidates.append(os.path.join(data_dir, child))
    for candidate in candidates:
        if os.path.isdir(candidate) and _detect_layout(candidate) == key:
            return candidate
    raise ValueError(
        f"Missing folder for dataset '{key}': no official archive layout found "
        f"in data_dir='{data_dir}' (searched {candidates}). Expected "
        + (
            "wnids.txt, train/<wnid>/images/ and val/val_annotations.txt."
            if key == "tiny_imagenet"
            else "data/images/*.jpg and data/images_variant_<split>.txt."
        )
    )


def _aircraft_data_dir(root):
    for candidate in (os.path.join(root, "data"), root):
        if os.path.isfile(os.path.join(candidate, "images_variant_trainval.txt")) or (
            os.path.isfile(os.path.join(candidate, "images_variant_train.txt"))
        ):
            return candidate
    return None


def _detect_layout(root):
    if os.path.isfile(os.path.join(root, "wnids.txt")) and os.path.isdir(
        os.path.join(root, "train")
    ):
        return "tiny_imagenet"
    if _aircraft_data_dir(root) is not None:
        return "fgvc_aircraft"
    return "folder"


# --------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------


def _load_tfds(name, split, data_dir, download, with_ids, shuffle_files):
    import tensorflow_datasets as tfds

    _check_split(split, registry.DATASETS[name].splits, name)
    if with_ids and shuffle_files:
        raise ValueError(
            "`with_ids=True` needs a deterministic read order: pass "
            "shuffle_files=False (shuffle later, in `pipeline`). "
            f"Received: shuffle_files={shuffle_files}"
        )
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            where = data_dir if data_dir is not None else "the TFDS default data_dir"
            hint = ""
            if name == "imagenet2012":
                hint = (
                    " ImageNet needs a manual download first: put "
                    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
                    f"{os.path.join(os.path.dirname(os.path.dirname(builder.data_dir)), 'downloads', 'manual')}."
                )
            raise ValueError(
                f"Dataset '{name}' is not prepared in {builder.data_dir} "
                f"(data_dir={where}). Pass download=True (experiment flag "
                "--download) to download and prepare it, or point data_dir "
                f"at a folder that holds it.{hint}"
            )
        builder.download_and_prepare()
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=shuffle_files)
    ds = ds.map(
        lambda image, label: (_to_rgb(image), tf.cast(label, tf.int64)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if with_ids:
        ds = ds.enumerate().map(
            lambda i, element: (element[0], element[1], tf.cast(i, tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds


def _to_rgb(image):
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    channels = image.shape[-1]
    if channels == 1:
        image = tf.repeat(image, 3, axis=-1)
    return image


# --------------------------------------------------------------------------
# Arrays: digits and .npz
# --------------------------------------------------------------------------


def _digits_split(split, key="digits"):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_split(split, registry.DATASETS[key].splits, key)
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_index, test_index = train_test_split(
        index, test_size=0.2, random_state=0, stratify=labels
    )
    chosen = train_index if split == "train" else test_index
    images, labels = images[chosen], labels[chosen]
    if key == "scattered_digits":
        images = _scatter(images, registry.SCATTERED_DIGITS_CANVAS,
                          seed=0 if split == "train" else 1)
    return npz.as_uint8_rgb(images, key), labels


def _scatter(images, canvas, seed):
    """Each (h, w) image pasted at a random position of a black canvas x canvas."""
    n, height, width = images.shape
    offsets = np.random.default_rng(seed).integers(0, canvas - height + 1, size=(n, 2))
    out = np.zeros((n, canvas, canvas), images.dtype)
    for image, big, (top, left) in zip(images, out, offsets):
        big[top:top + height, left:left + width] = image
    return out


def _limit_indices(labels, per_class_limit):
    if per_class_limit is None:
        return np.arange(len(labels))
    counts = {}
    keep = []
    for index, label in enumerate(labels):
        label = int(label)
        if counts.get(label, 0) < per_class_limit:
            counts[label] = counts.get(label, 0) + 1
            keep.append(index)
    return np.asarray(keep, dtype=np.int64)


def _from_arrays(images, labels, with_ids, per_class_limit, shuffle_files):
    keep = _limit_indices(labels, per_class_limit)
    images, labels = images[keep], labels[keep]
    ids = np.arange(len(labels), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((images, labels, ids))
    if shuffle_files:
        ds = ds.shuffle(len(labels), reshuffle_each_iteration=True)
    if not with_ids:
        ds = ds.map(lambda image, label, _: (image, label))
    return ds


# --------------------------------------------------------------------------
# File trees
# --------------------------------------------------------------------------


def _is_image(filename):
    return filename.lower().endswith(IMAGE_EXTENSIONS)


def _list_files(kind, root):
    """Returns `{"classes": [...], "splits": {split: (paths, labels)}}`."""
    if kind == "tiny_imagenet":
        return _list_tiny_imagenet(root)
    if kind == "fgvc_aircraft":
        return _list_aircraft(root)
    return _list_image_folder(root)


def _sorted_dirs(path):
    return sorted(
        entry for entry in os.listdir(path) if os.path.isdir(os.path.join(path, entry))
    )


def _list_image_folder(root):
    split_names = [
        split for split in _sorted_dirs(root) if _sorted_dirs(os.path.join(root, split))
    ]
    if not split_names:
        raise ValueError(
            f"Empty folder: '{root}' has no <split>/<class>/ sub-folders. "
            "Expected root/<split>/<class>/<image> with images "
            f"{IMAGE_EXTENSIONS}."
        )
    classes = sorted(
        {name for split in split_names for name in _sorted_dirs(os.path.join(root, split))}
    )
    class_index = {name: index for index, name in enumerate(classes)}
    splits = {}
    for split in split_names:
        paths, labels = [], []
        for name in _sorted_dirs(os.path.join(root, split)):
            folder = os.path.join(root, split, name)
            images = [f for f in sorted(os.listdir(folder)) if _is_image(f)]
            if not images:
                raise ValueError(
                    f"Empty folder: class folder '{folder}' holds no images "
                    f"{IMAGE_EXTENSIONS}; every class folder needs at least one "
                    "(remove the folder, or add its images)."
                )
            for filename in images:
                paths.append(os.path.join(folder, filename))
                labels.append(class_index[name])
        splits[split] = (paths, labels)
    return {"classes": classes, "splits": splits}


def _list_tiny_imagenet(root):
    with open(os.path.join(root, "wnids.txt")) as f:
        classes = sorted(line.strip() for line in f if line.strip())
    class_index = {name: index for index, name in enumerate(classes)}
    splits = {}
    paths, labels = [], []
    for name in classes:
        folder = os.path.join(root, "train", name, "images")
        if not os.path.isdir(folder):
            continue
        images = [f for f in sorted(os.listdir(folder)) if _is_image(f)]
        if not images:
            raise ValueError(
                f"Empty folder: class folder '{folder}' holds no images "
                f"{IMAGE_EXTENSIONS}; every class folder needs at least one."
            )
        for filename in images:
            paths.append(os.path.join(folder, filename))
            labels.append(class_index[name])
    splits["train"] = (paths, labels)
    annotations = os.path.join(root, "val", "val_annotations.txt")
    if os.path.isfile(annotations):
        entries = []
        with open(annotations) as f:
            for line in f:
                fields = line.strip().split("\t")
                if len(fields) >= 2:
                    entries.append((fields[0], fields[1]))
        entries.sort()
        for filename, wnid in entries:
            if wnid not in class_index:
                raise ValueError(
                    f"{annotations} names class '{wnid}', which is not in "
                    f"{os.path.join(root, 'wnids.txt')}."
                )
        splits["val"] = (
            [os.path.join(root, "val", "images", filename) for filename, _ in entries],
            [class_index[wnid] for _, wnid in entries],
        )
    test_folder = os.path.join(root, "test", "images")
    if os.path.isdir(test_folder):
        files = sorted(f for f in os.listdir(test_folder) if _is_image(f))
        splits["test"] = ([os.path.join(test_folder, f) for f in files], [-1] * len(files))
    if not splits["train"][0] and "val" not in splits:
        raise ValueError(f"Empty folder: no tiny-imagenet images under '{root}'.")
    return {"classes": classes, "splits": splits}


def _read_variant_file(path):
    entries = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                image_id, _, variant = line.partition(" ")
                entries.append((image_id, variant.strip()))
    return entries


def _list_aircraft(root):
    data = _aircraft_data_dir(root)
    split_files = {}
    for filename in sorted(os.listdir(data)):
        if filename.startswith("images_variant_") and filename.endswith(".txt"):
            split_files[filename[len("images_variant_") : -len(".txt")]] = _read_variant_file(
                os.path.join(data, filename)
            )
    variants_file = os.path.join(data, "variants.txt")
    if os.path.isfile(variants_file):
        with open(variants_file) as f:
            classes = [line.strip() for line in f if line.strip()]
    else:
        classes = sorted({variant for entries in split_files.values() for _, variant in entries})
    class_index = {name: index for index, name in enumerate(classes)}
    splits = {}
    for split, entries in split_files.items():
        for _, variant in entries:
            if variant not in class_index:
                raise ValueError(
                    f"images_variant_{split}.txt names variant '{variant}', "
                    f"which is not in {variants_file}."
                )
        splits[split] = (
            [os.path.join(data, "images", image_id + ".jpg") for image_id, _ in entries],
            [class_index[variant] for _, variant in entries],
        )
    return {"classes": classes, "splits": splits}


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


def _header_problem(path):
    """Why `path` is not an image TensorFlow can decode (header check), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if not head:
        return "is empty"
    return f"is not a JPEG/PNG/BMP/GIF/WebP file (starts with {head[:8]!r})"


def _decode_problem(path):
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        return "cannot be decoded (" + error.message.split("[Op:")[0].strip() + ")"
    return None


def _check_image_files(paths, labels, skip_corrupt, where):
    """Drops or refuses files that are not decodable images (see `load(skip_corrupt=)`)."""
    problems = {}
    for path in paths:
        problem = _header_problem(path)
        if problem is None and len(paths) <= DECODE_CHECK_LIMIT:
            problem = _decode_problem(path)
        if problem is not None:
            problems[path] = problem
    if not problems:
        return paths, labels
    listed = "; ".join(f"'{p}' {why}" for p, why in list(problems.items())[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    if not skip_corrupt:
        raise ValueError(
            f"{len(problems)} of the {len(paths)} image files of {where} are not "
            f"decodable images: {listed}{more}. Remove or replace them, or pass "
            "skip_corrupt=True to skip them."
        )
    _LOG.warning(
        "Skipping %d of the %d image files of %s (skip_corrupt=True): %s%s",
        len(problems), len(paths), where, listed, more,
    )
    keep = [i for i, path in enumerate(paths) if path not in problems]
    return [paths[i] for i in keep], [labels[i] for i in keep]


def _limit_per_class(paths, labels, per_class_limit):
    keep = _limit_indices(labels, per_class_limit)
    return [paths[i] for i in keep], [labels[i] for i in keep]


def _decode(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _image_size(path):
    shape = tf.io.extract_jpeg_shape if path.lower().endswith((".jpg", ".jpeg")) else None
    if shape is not None:
        height, width, _ = shape(tf.io.read_file(path)).numpy().tolist()
        return (height, width)
    return tuple(_decode(path).shape[:2])


def _from_files(paths, labels, with_ids, shuffle_files):
    ids = np.arange(len(paths), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths), tf.constant(labels, tf.int64), ids)
    )
    if shuffle_files:
        ds = ds.shuffle(len(paths), reshuffle_each_iteration=True)
    if with_ids:
        read = lambda path, label, i: (_decode(path), label, i)  # noqa: E731
    else:
        read = lambda path, label, i: (_decode(path), label)  # noqa: E731
    return ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
