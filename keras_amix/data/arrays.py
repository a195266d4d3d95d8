"""In-memory `.npz` data without TensorFlow: a reader and a `keras.utils.PyDataset`.

The TF-free twin of `sources.load(<.npz>)` + `pipeline(...)` for machines
without TensorFlow (e.g. a JAX GPU host). Same file layout, labels, statistics
and CIFAR augmentation; the random draws come from NumPy, so the batches are
not bit-identical to the tf.data pipeline's, but follow the same contract:
pass `e` of a training run is a function of `(seed, e)` only, so a run resumed
at epoch `e` sees the batches an uninterrupted one sees.

Nothing here imports TensorFlow.
"""

import keras
import numpy as np

from keras_amix.data import crop
from keras_amix.data import npz
from keras_amix.data import numpy_augment

AUGMENTS = (None, "none", "cifar")


def load_npz(path):
    """Reads an `.npz` data set: `({split: (images, labels)}, DatasetInfo)`,
    images uint8 `(N, H, W, 3)` and labels int64 `(N,)`, checked and converted
    as `keras_amix.data.load` reads the file (`keras_amix.data.npz`: grey
    repeated to RGB, [0, 1] floats scaled, `(N, 1)` labels flattened). The
    info carries ImageNet statistics, as `keras_amix.data.info(<.npz>)` does.
    """
    return npz.load(path)


def first_per_class(labels, limit):
    """Indices of the first `limit` samples of each class, in file order."""
    rank = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    return np.flatnonzero(rank < limit)


def cifar_augment(images, rng):
    """Random crop after REFLECT padding of `H // 8` pixels (at least 1) per
    side, then a horizontal flip with probability 1/2; one draw per image
    (`keras_amix.data.augment.reflect_pad_crop` + `random_flip` in NumPy)."""
    n, height, width, _ = images.shape
    pad = max(1, height // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    top, left = rng.integers(0, 2 * pad + 1, (2, n))
    rows = top[:, None, None] + np.arange(height)[None, :, None]
    cols = left[:, None, None] + np.arange(width)[None, None, :]
    images = padded[np.arange(n)[:, None, None], rows, cols]
    flip = rng.random(n) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


class ArrayBatches(keras.utils.PyDataset):
    """Batches of in-memory uint8 images: `(images float32 NHWC, one-hot float32)`.

    Images are `(x / 255 - mean) / std` (a None `mean` / `std` skips that
    part), as `keras_amix.data.pipeline` makes them. With `training=True`,
    each pass is shuffled and, with `augment="cifar"`, cropped and flipped
    (`cifar_augment`); the last partial batch is dropped unless
    `drop_remainder=False`.

    Like `pipeline(..., epochs=N, initial_epoch=e)`, the data set holds the
    passes `initial_epoch..epochs - 1` back to back (`len` = passes x
    `steps_per_epoch`): pass `e`'s order comes from
    `np.random.default_rng([seed, e])` and batch `i`'s augmentation from
    `default_rng([seed, e, i])`, so any batch is a function of
    `(seed, epoch, i)` only. Fit it with `model.fit(ds, epochs=epochs,
    initial_epoch=e, steps_per_epoch=ds.steps_per_epoch, shuffle=False)`:
    Keras' default `shuffle=True` would permute the batches of all passes.
    Evaluation (`training=False`) is one pass in file order.

    Args:
        images: uint8 array `(N, H, W, C)`.
        labels: int array `(N,)` in `[0, num_classes)`.
        batch_size: images per batch.
        num_classes: depth of the one-hot labels.
        training: shuffle and augment if True.
        augment: "cifar", or "none" / None.
        image_size: None, or the size the images must have (an int or
            `(h, w)`; nothing is resized).
        mean, std: per-channel statistics in [0, 1] units, or None.
        seed: int seed of the order and augmentation.
        epochs, initial_epoch: the passes held when training.
        drop_remainder: default True when training, False otherwise.
        one_hot: one-hot float32 labels (default) or the int64 labels.
        **kwargs: `keras.utils.PyDataset`'s (`workers`, ...).

    Example:

    ```python
    splits, info = load_npz("cifar10.npz")
    train = ArrayBatches(*splits["train"], batch_size=100, num_classes=10,
                         training=True, augment="cifar", mean=info.mean,
                         std=info.std, seed=0, epochs=800)
    model.fit(train, epochs=800, steps_per_epoch=train.steps_per_epoch, shuffle=False)
    ```
    """

    def __init__(self, images, labels, *, batch_size, num_classes, training, augment=None,
                 image_size=None, mean=None, std=None, seed=0, epochs=1, initial_epoch=0,
                 drop_remainder=None, one_hot=True, **kwargs):
        super().__init__(**kwargs)
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"`images` must be uint8 (N, H, W, C); received "
                             f"{images.dtype} {images.shape}.")
        if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`labels` must be {len(images)} integers; received "
                             f"{labels.dtype} {labels.shape}.")
        if augment not in AUGMENTS:
            raise ValueError(f"`augment` must be one of {AUGMENTS} for in-memory arrays; "
                             f"received augment={augment!r}.")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and tuple(image_size) != images.shape[1:3]:
            raise ValueError(f"The images are {images.shape[1]}x{images.shape[2]} and "
                             f"`image_size`={image_size} asks for another size: in-memory "
                             "arrays are not resized; pass their own size.")
        for name, value in (("batch_size", batch_size), ("num_classes", num_classes),
                            ("epochs", epochs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        if not isinstance(initial_epoch, int) or not 0 <= initial_epoch < epochs:
            raise ValueError(f"`initial_epoch` must be an int in [0, epochs={epochs}); "
                             f"received {initial_epoch!r}.")
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.size:
            raise ValueError(f"Label out of range: labels must be in [0, {num_classes}); "
                             f"received {np.unique(bad).tolist()[:10]}.")
        self.images, self.labels = images, labels.astype(np.int64)
        self.batch_size, self.num_classes, self.training = batch_size, num_classes, training
        self.augment = None if augment == "none" else augment
        self.mean = None if mean is None else np.asarray(mean, np.float32)
        self.std = None if std is None else np.asarray(std, np.float32)
        self.seed, self.epochs, self.initial_epoch = seed, epochs, initial_epoch
        self.drop_remainder = training if drop_remainder is None else drop_remainder
        self.one_hot = one_hot
        n = len(images)
        self.steps_per_epoch = n // batch_size if self.drop_remainder else -(-n // batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"`batch_size`={batch_size} is larger than the {n} images with "
                             "drop_remainder=True: not one batch fits.")
        self._passes = epochs - initial_epoch if training else 1
        self._order = {}  # epoch -> permutation (the latest pass only)

    def __len__(self):
        return self._passes * self.steps_per_epoch

    def _batch(self, index):
        """`(epoch, step, rows)` of batch `index`: its pass, its step in the pass and
        the rows of `images` it holds (an index array when training, else a slice)."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        epoch = self.initial_epoch + index // self.steps_per_epoch
        step = index % self.steps_per_epoch
        rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
        if self.training:
            if epoch not in self._order:
                self._order = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                    len(self.images))}
            rows = self._order[epoch][rows]
        return epoch, step, rows

    def _normalize(self, images):
        """float32 `(x - mean) / std` of images in [0, 1]."""
        if self.mean is not None:
            images = images - self.mean
        if self.std is not None:
            images = images / self.std
        return images

    def __getitem__(self, index):
        epoch, step, rows = self._batch(index)
        images, labels = self.images[rows], self.labels[rows]
        if self.training and self.augment == "cifar":
            images = cifar_augment(images, np.random.default_rng([self.seed, epoch, step]))
        images = self._normalize(images.astype(np.float32) / 255.0)
        return images, (np.eye(self.num_classes, dtype=np.float32)[labels] if self.one_hot
                        else labels)


class TwoViewBatches(ArrayBatches):
    """MoCo v2 two-view batches of in-memory uint8 images, without TensorFlow.

    The TF-free twin of `keras_amix.data.two_view_pipeline`: each batch is
    `({"view1", "view2"[, "ids"]}, labels int64)`, the views two independent
    `numpy_augment.moco_v2_view`s (RandomResizedCrop to `image_size`, colour
    jitter, grey, blur, flip), normalised with `mean` / `std`; `ids` are the
    rows' positions in `images` (the sample ids ODC's memory is indexed by).
    Passes, order and seeds follow `ArrayBatches`: batch `i` of pass `e` is a
    function of `(seed, e, i)` only (views from `default_rng([seed, e, i])`),
    so a resumed run sees the batches an uninterrupted one sees. Fit with
    `shuffle=False` and `steps_per_epoch=ds.steps_per_epoch`.

    Args:
        images: uint8 `(N, H, W, 3)`.
        labels: int `(N,)` in `[0, num_classes)` (unused by MoCo's loss).
        batch_size: images per batch.
        num_classes: the labels' range.
        image_size: output size of the views (int or `(h, w)`).
        mean, std: per-channel statistics in [0, 1] units, or None.
        seed, epochs, initial_epoch: as `ArrayBatches`.
        with_ids: add `"ids"` to the inputs dict.
        scale: area range of the crop.
        **kwargs: `keras.utils.PyDataset`'s (`workers`, ...).
    """

    def __init__(self, images, labels, *, batch_size, num_classes, image_size, mean=None,
                 std=None, seed=0, epochs=1, initial_epoch=0, with_ids=False,
                 scale=(0.2, 1.0), **kwargs):
        super().__init__(images, labels, batch_size=batch_size, num_classes=num_classes,
                         training=True, mean=mean, std=std, seed=seed, epochs=epochs,
                         initial_epoch=initial_epoch, drop_remainder=True, **kwargs)
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            image_size = (image_size, image_size)
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or not all(isinstance(v, int) and v > 0 for v in image_size)):
            raise ValueError(f"`image_size` must be a positive int or a pair of them; "
                             f"received image_size={image_size!r}.")
        self.image_size = tuple(image_size)
        self.with_ids = with_ids
        self.scale = crop.check_range(scale, "scale")

    def __getitem__(self, index):
        epoch, step, rows = self._batch(index)
        rng = np.random.default_rng([self.seed, epoch, step])
        images = self.images[rows].astype(np.float32) / 255.0
        views = [numpy_augment.moco_v2_view(images, rng, self.image_size, scale=self.scale)
                 for _ in range(2)]
        inputs = {"view1": self._normalize(views[0]), "view2": self._normalize(views[1])}
        if self.with_ids:
            inputs["ids"] = np.asarray(rows, np.int64)
        return inputs, self.labels[rows]
