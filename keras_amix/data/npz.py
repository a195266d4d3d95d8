"""The `.npz` data-set format, read and checked in one place (no TensorFlow).

Both input paths read `.npz` files through here: `keras_amix.data.load` (the
tf.data path) and `keras_amix.data.arrays.load_npz` (the NumPy path of
machines without TensorFlow), so a file one accepts the other accepts too,
with the same images, labels and class count.

The layout: `x_<split>` / `y_<split>` pairs (and `images` / `labels` as the
"train" split); `num_classes` from a `num_classes` or `class_names` key, else
1 + the largest label. Images `(N, H, W)`, `(N, H, W, 1)` or `(N, H, W, 3)`,
uint8, or integers / floats in [0, 255] or [0, 1] (finite), are returned as
uint8 RGB (grey repeated). Labels `(N,)` or `(N, 1)` (as
`keras.datasets.cifar10.load_data()` gives them) of integer values in
0..num_classes-1, or -1 for unlabelled samples, are returned as int64 `(N,)`.
"""

import numpy as np

from keras_amix.data import registry


def _header_only(data, key):
    """A stand-in for array `key` of the open .npz `data` with its shape and
    dtype, read from the .npy header alone (a zero-stride view: no memory)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0,
               (2, 0): np.lib.format.read_array_header_2_0}
    with data.zip.open(key + ".npy") as f:
        reader = readers.get(np.lib.format.read_magic(f))
        if reader is None:  # a newer .npy format: read the array itself
            return data[key]
        shape, _, dtype = reader(f)
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))


def read(path, images=True):
    """`({split: (images as stored, labels int64 (N,))}, num_classes)`, the
    labels checked; the images are converted by `split` / `load`. `images`:
    True reads every split's images, a split name only that split's, False
    none (the others are header-only stand-ins with their shape and dtype)."""
    with np.load(path, allow_pickle=False) as data:
        keys = data.files
        pairs = {}
        if "images" in keys and "labels" in keys:
            pairs["train"] = ("images", "labels")
        pairs.update({key[2:]: (key, "y_" + key[2:]) for key in keys
                      if key.startswith("x_") and "y_" + key[2:] in keys})
        if not pairs:
            raise ValueError(f"The .npz file '{path}' holds keys {sorted(keys)}; expected "
                             "x_<split>/y_<split> pairs or images/labels.")
        splits = {name: (data[x] if images is True or images == name
                         else _header_only(data, x), data[y])
                  for name, (x, y) in pairs.items()}
        contents = {key: data[key] for key in ("num_classes", "class_names") if key in keys}
    for name, (images, labels) in splits.items():
        labels = np.asarray(labels)
        where = f"split '{name}' of '{path}'"
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"Labels of {where} must have shape ({len(images)},) or "
                             f"({len(images)}, 1), one per image; received shape "
                             f"{labels.shape}.")
        if not (np.issubdtype(labels.dtype, np.integer)
                or (np.issubdtype(labels.dtype, np.floating)
                    and np.all(np.isfinite(labels)) and np.all(np.mod(labels, 1) == 0))):
            raise ValueError(f"Labels of {where} must be integers; received dtype "
                             f"{labels.dtype} with non-integer values.")
        splits[name] = (images, labels.astype(np.int64))
    if "num_classes" in contents:
        num_classes = int(contents["num_classes"])
    elif "class_names" in contents:
        num_classes = len(contents["class_names"])
    else:
        num_classes = 1 + max(int(labels.max(initial=-1)) for _, labels in splits.values())
    for name, (_, labels) in splits.items():
        bad = (labels < -1) | (labels >= num_classes)
        if np.any(bad):
            raise ValueError(
                f"Labels out of range in split '{name}' of '{path}': received labels "
                f"{np.unique(labels[bad]).tolist()[:10]}; allowed are 0..{num_classes - 1} "
                f"(num_classes={num_classes}) and -1 for unlabelled samples.")
    return splits, num_classes


def as_uint8_rgb(images, where):
    """Images `(N, H, W[, 1 or 3])` of integers or floats in [0, 255] or
    [0, 1] as uint8 `(N, H, W, 3)`; refuses other shapes, dtypes and
    non-finite pixels, naming `where`."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"Images in {where} must have shape (N, H, W), (N, H, W, 1) or "
                         f"(N, H, W, 3). Received shape {images.shape}.")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise ValueError(f"Images in {where} must have an integer or float dtype; received "
                         f"dtype {images.dtype}.")
    if np.issubdtype(images.dtype, np.floating):
        bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
        if bad:
            raise ValueError(
                f"Images in {where} hold {bad} non-finite pixel value(s) (NaN or inf); "
                "every pixel must be finite (uint8 0..255, or floats in [0, 1] or [0, 255]).")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype != np.uint8:
        images = images.astype(np.float64)
        if images.size and images.max() <= 1.0:
            images = images * 255.0
        images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    return images


def _one(splits, name, path):
    if name not in splits:
        raise ValueError(f"Unknown split: split='{name}' for dataset '{path}'. "
                         f"Available splits: {list(splits)}.")
    return splits[name]


def split(path, name):
    """One split: `(images uint8 (N, H, W, 3), labels int64 (N,), num_classes)`."""
    splits, num_classes = read(path, images=name)
    images, labels = _one(splits, name, path)
    return as_uint8_rgb(images, f"split '{name}' of '{path}'"), labels, num_classes


def labels(path, name):
    """One split's labels, int64 `(N,)`, without converting its images."""
    return _one(read(path, images=False)[0], name, path)[1]


def info(path, contents=None):
    """The file's `DatasetInfo` (ImageNet statistics; the augmentation of its
    size, `registry.augment_for`);
    `contents` is `read(path)`'s result when the caller has it."""
    splits, num_classes = contents or read(path, images=False)
    sizes = {tuple(np.shape(images)[1:3]) for images, _ in splits.values()}
    image_size = sizes.pop() if len(sizes) == 1 else None
    return registry.DatasetInfo(
        name=path, num_classes=num_classes, image_size=image_size, channels=3,
        mean=registry.IMAGENET_MEAN, std=registry.IMAGENET_STD, splits=tuple(splits),
        num_examples={name: len(labels) for name, (_, labels) in splits.items()},
        augment=registry.augment_for(image_size), source="npz")


def load(path):
    """Every split: `({split: (images uint8 (N, H, W, 3), labels int64)},
    DatasetInfo)`."""
    contents = read(path)
    splits = {name: (as_uint8_rgb(images, f"split '{name}' of '{path}'"), labels)
              for name, (images, labels) in contents[0].items()}
    return splits, info(path, contents)
