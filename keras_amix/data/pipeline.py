"""Batched training / evaluation pipelines on top of `keras_amix.data.load`.

Outputs (what `model.fit` receives):

- `pipeline`: `(images, labels)`, or `({"images": images, "ids": ids}, labels)`
  when the input dataset yields ids (a 3-tuple would be read by Keras as
  `(x, y, sample_weight)`). Images float32 NHWC normalised
  `(x / 255 - mean) / std`; labels one-hot float32 `(B, num_classes)`, or the
  int64 labels with `one_hot=False`.
- `two_view_pipeline`: `({"view1": x1, "view2": x2[, "ids": ids]}, labels)`,
  labels int64 (-1 for unlabelled samples).

Randomness: one stateless seed per batch (and per image where images are
resized one by one). Two modes:

- `epochs=None` (default): the dataset is one pass over the data; each new
  iteration (Keras starts one per epoch) reshuffles and draws new seeds from
  `tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`. A fixed
  `seed` repeats the whole run, but a restarted process starts again at the
  first epoch's draws.
- `epochs=N`: the dataset holds passes `initial_epoch, ..., N - 1` back to
  back, and pass e's shuffle and seeds are a function of `(seed, e)` only
  (`_pass_keys`). A run resumed at epoch e with `initial_epoch=e` sees the
  same order and augmentations as an uninterrupted one. Train on it with
  `model.fit(ds, epochs=N, initial_epoch=e, steps_per_epoch=batches per pass)`.

Speed: images of a known static size (TFDS CIFAR/STL, digits, `.npz`) are
batched first and augmented with vectorised per-image ops. Images of varying
size (folders, CUB, ImageNet) are resized / cropped per element to
`image_size` first (so they can be batched), then the same batch ops run.
"""

import tensorflow as tf

from keras_amix.data import augment as aug
from keras_amix.data.random_resized_crop import random_resized_crop

AUGMENT_PRESETS = (None, "cifar", "imagenet")
EVAL_CROP_FRACTION = 0.875


def _size_pair(image_size, name="image_size"):
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, int) and v > 0 for v in image_size)
    ):
        raise ValueError(
            f"`{name}` must be None, a positive int or a pair of positive ints. "
            f"Received: {name}={image_size}"
        )
    return tuple(image_size)


def _check_positive_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value}")


def _check_stats(value, name):
    if value is not None and len(value) not in (1, 3):
        raise ValueError(
            f"`{name}` must be None or a sequence of 1 or 3 per-channel values "
            f"in [0, 1] units. Received: {name}={value}"
        )


def _element_parts(ds, name="ds"):
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            f"`{name}` must yield (image, label) or (image, label, id) as "
            f"returned by keras_amix.data.load. Received element_spec={spec}"
        )
    return len(spec) == 3


def _static_hw(ds):
    shape = ds.element_spec[0].shape
    if shape.rank == 3 and shape[0] is not None and shape[1] is not None:
        return (shape[0], shape[1])
    return None


def _seed_stream(seed, offset=0, keys=None):
    """An infinite dataset of stateless seeds, shape (2,) int64.

    `keys=None`: new draws at each iteration of the dataset. Otherwise
    `keys` are the pass keys of `_pass_keys` and seed i is `(keys[1 + offset], i)`.
    """
    if keys is not None:
        return tf.data.Dataset.counter().map(lambda i: tf.stack([keys[1 + offset], i]))
    base = None if seed is None else seed + offset
    stream = tf.data.Dataset.random(seed=base, rerandomize_each_iteration=True)
    return stream.map(lambda r: tf.stack([r, tf.constant(offset, tf.int64)]))


def _pass_keys(seed, epoch):
    """Three int64 keys of pass `epoch`, a function of `(seed, epoch)` only:
    the shuffle seed, then the keys of the per-batch and per-image seeds."""
    return tf.random.stateless_uniform(
        [3], seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)]),
        minval=None, maxval=None, dtype=tf.int64)


def _check_epochs(epochs, initial_epoch, seed):
    if epochs is None:
        if initial_epoch:
            raise ValueError(
                f"`initial_epoch` needs `epochs`; received initial_epoch={initial_epoch!r} "
                "with epochs=None."
            )
        return
    _check_positive_int(epochs, "epochs")
    if (not isinstance(initial_epoch, int) or isinstance(initial_epoch, bool)
            or not 0 <= initial_epoch < epochs):
        raise ValueError(
            f"`initial_epoch` must be an int in [0, epochs={epochs}); "
            f"received initial_epoch={initial_epoch!r}."
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(
            f"`epochs` makes each pass a function of (seed, epoch): it needs an int `seed`; "
            f"received seed={seed!r}."
        )


def _passes(ds, one_pass, seed, epochs, initial_epoch):
    """`one_pass(ds, keys)` once (keys None), or passes initial_epoch..epochs-1."""
    if epochs is None:
        return one_pass(ds, None)
    return tf.data.Dataset.range(initial_epoch, epochs).flat_map(
        lambda epoch: one_pass(ds, _pass_keys(seed, epoch)))


def _shuffle(ds, buffer, seed, keys):
    """`ds.shuffle(buffer)` (keys None), or a stateless shuffle of pass `keys`:
    each window of `buffer` consecutive elements (the whole data set when it
    has no more) is permuted by `stateless_shuffle` with the seed
    `(keys[0], window index)`. (`Dataset.shuffle` cannot take a per-pass
    tensor seed once a global seed is set.) Windows keep their order."""
    if not buffer:
        return ds
    if keys is None:
        return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    specs = ds.element_spec

    def permute(index, window):
        first = tf.nest.flatten(window)[0]
        rows = first.nrows() if isinstance(first, tf.RaggedTensor) else tf.shape(first)[0]
        order = tf.random.experimental.stateless_shuffle(
            tf.range(rows), tf.stack([keys[0], index]))
        return tf.nest.map_structure(lambda part: tf.gather(part, order), window)

    def dense(*element):  # images of varying size were batched as ragged rows
        return tuple(
            tf.ensure_shape(part.to_tensor() if isinstance(part, tf.RaggedTensor) else part,
                            spec.shape)
            for part, spec in zip(element, specs))

    return ds.ragged_batch(buffer).enumerate().map(permute).unbatch().map(dense)


def _resize_shorter_center_crop(images, size):
    """Eval transform of ImageNet-style data: shorter side to size / 0.875, centre crop."""
    height, width = size
    shape = tf.shape(images)
    in_h = tf.cast(shape[-3], tf.float32)
    in_w = tf.cast(shape[-2], tf.float32)
    target = tf.round(max(height, width) / EVAL_CROP_FRACTION)
    factor = target / tf.minimum(in_h, in_w)
    new_h = tf.maximum(tf.cast(tf.round(in_h * factor), tf.int32), height)
    new_w = tf.maximum(tf.cast(tf.round(in_w * factor), tf.int32), width)
    images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear")
    top = (new_h - height) // 2
    left = (new_w - width) // 2
    return images[..., top : top + height, left : left + width, :]


def _resize_if_needed(images, size):
    """Bilinear resize to `size` (a no-op when the size already matches)."""
    shape = tf.shape(images)
    same = tf.logical_and(tf.equal(shape[-3], size[0]), tf.equal(shape[-2], size[1]))
    return tf.cond(
        same,
        lambda: tf.cast(images, tf.float32),
        lambda: tf.image.resize(tf.cast(images, tf.float32), size, method="bilinear"),
    )


def _check_labels(labels, num_classes, allow_unlabelled):
    low = -1 if allow_unlabelled else 0
    checks = [
        tf.debugging.assert_less(
            labels,
            tf.constant(num_classes, labels.dtype),
            message=f"Label out of range: labels must be < num_classes={num_classes}",
        ),
        tf.debugging.assert_greater_equal(
            labels,
            tf.constant(low, labels.dtype),
            message=(
                f"Label out of range: labels must be >= {low}"
                + (" (-1 = unlabelled)" if allow_unlabelled else " (with one_hot=True)")
            ),
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def pipeline(
    ds,
    *,
    batch_size,
    num_classes,
    training,
    image_size=None,
    augment=None,
    mean=None,
    std=None,
    one_hot=True,
    shuffle_buffer=10_000,
    drop_remainder=None,
    seed=None,
    cache=False,
    epochs=None,
    initial_epoch=0,
):
    """Batches, augments and normalises a dataset from `keras_amix.data.load`.

    Training transforms (`training=True`):
    - `augment="cifar"`: resize to `image_size` if given, random horizontal
      flip and a random crop after REFLECT padding of `H // 8` pixels per side
      (4 px at 32 x 32), each image with its own draw.
    - `augment="imagenet"`: RandomResizedCrop to `image_size` (default: the
      native size) with scale (0.08, 1), ratio (3/4, 4/3), then flip.
    - `augment=None`: resize to `image_size` if given.
    Evaluation (`training=False`): resize to `image_size` if given; with
    `augment="imagenet"` the shorter side goes to `image_size / 0.875` and the
    centre `image_size` crop is kept.

    Labels are checked inside the map with `tf.debugging` assertions: a label
    `>= num_classes` or `< 0` (`< -1` with `one_hot=False`, where -1 marks
    unlabelled samples) stops iteration with `tf.errors.InvalidArgumentError`
    whose message starts with "Label out of range".

    Args:
        ds: dataset of `(image, label)` or `(image, label, id)`.
        batch_size: images per batch.
        num_classes: number of classes (one-hot depth and label check).
        training: shuffle and augment if True.
        image_size: output size (int or `(h, w)`); required when the images
            have no static size (folders, CUB, ImageNet).
        augment: None, "cifar" or "imagenet" (see above).
        mean, std: per-channel statistics in [0, 1] units (see
            `keras_amix.data.info(...).mean`); None skips that part, giving
            `x / 255`.
        one_hot: one-hot float32 labels if True, int64 labels otherwise.
        shuffle_buffer: shuffle buffer size when training (0: no shuffle).
        drop_remainder: drop the last partial batch; default True when
            training, False otherwise.
        seed: int seed of the shuffle and of the augmentations (None: random).
        cache: cache the decoded, unbatched dataset in memory.
        epochs: None (one pass, new draws per iteration) or the number of
            epochs of the run: the dataset then holds passes
            `initial_epoch..epochs - 1`, each randomised by `(seed, epoch)`
            (see the module docstring; needs an int `seed`).
        initial_epoch: first pass held when `epochs` is given (a resumed run).

    Returns:
        A `tf.data.Dataset` (see the module docstring for the structure).

    Example:

    ```python
    info = keras_amix.data.info("cifar10")
    train = keras_amix.data.pipeline(
        keras_amix.data.load("cifar10", "train"), batch_size=128,
        num_classes=info.num_classes, training=True, augment="cifar",
        mean=info.mean, std=info.std)
    ```
    """
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(num_classes, "num_classes")
    if augment not in AUGMENT_PRESETS:
        raise ValueError(
            f"`augment` must be one of {AUGMENT_PRESETS}. Received: augment={augment!r}"
        )
    _check_stats(mean, "mean")
    _check_stats(std, "std")
    _check_epochs(epochs, initial_epoch, seed)
    size = _size_pair(image_size)
    has_ids = _element_parts(ds)
    if drop_remainder is None:
        drop_remainder = bool(training)
    static_hw = _static_hw(ds)
    if static_hw is None and size is None:
        raise ValueError(
            "The images of `ds` have no static size (e.g. an image folder): "
            "pass image_size=(height, width) so that they can be batched. "
            f"Received: image_size={image_size}"
        )

    def split(element):
        return element if has_ids else (*element, None)

    def per_element(element, element_seed):
        # Images without a static size: bring each to `size` so that batching works.
        image, label, ids = split(element)
        if training and augment == "imagenet":
            image = random_resized_crop(image[None], size, element_seed)[0]
        elif augment == "imagenet":
            image = _resize_shorter_center_crop(tf.cast(image, tf.float32), size)
        else:
            image = _resize_if_needed(image, size)
        image = tf.ensure_shape(image, (*size, None))
        return (image, label) if ids is None else (image, label, ids)

    out_hw = size or static_hw

    def per_batch(element, batch_seed):
        images, labels, ids = split(element)
        s_crop, s_flip = tf.unstack(tf.random.experimental.stateless_split(batch_seed, 2))
        images = tf.cast(images, tf.float32) / 255.0
        if static_hw is not None:
            if training and augment == "imagenet":
                images = random_resized_crop(images, out_hw, s_crop)
            elif augment == "imagenet" and size is not None:
                images = _resize_shorter_center_crop(images, size)
            elif size is not None and size != static_hw:
                images = tf.image.resize(images, size, method="bilinear")
        if training and augment == "cifar":
            images = aug.reflect_pad_crop(images, max(1, out_hw[0] // 8), s_crop)
        if training and augment is not None:
            images = aug.random_flip(images, s_flip)
        images = aug.normalize(images, mean, std)
        labels = _check_labels(tf.cast(labels, tf.int64), num_classes, not one_hot)
        if one_hot:
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if ids is None:
            return images, labels
        return {"images": images, "ids": tf.cast(ids, tf.int64)}, labels

    def one_pass(ds, keys):
        if training:
            ds = _shuffle(ds, shuffle_buffer, seed, keys)
        if static_hw is None:
            ds = tf.data.Dataset.zip((ds, _seed_stream(seed, offset=1, keys=keys)))
            ds = ds.map(per_element, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                      num_parallel_calls=tf.data.AUTOTUNE)
        ds = tf.data.Dataset.zip((ds, _seed_stream(seed, keys=keys)))
        return ds.map(per_batch, num_parallel_calls=tf.data.AUTOTUNE)

    if cache:
        ds = ds.cache()
    ds = _passes(ds, one_pass, seed, epochs, initial_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)


def two_view_pipeline(
    ds,
    *,
    batch_size,
    image_size,
    mean,
    std,
    seed=None,
    with_ids=False,
    scale=(0.2, 1.0),
    shuffle_buffer=10_000,
    drop_remainder=True,
    cache=False,
    epochs=None,
    initial_epoch=0,
):
    """MoCo v2 two-view pipeline (DESIGN section 6).

    Each image gives two independent views: RandomResizedCrop(scale 0.2-1)
    to `image_size`, ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale
    with p 0.2, Gaussian blur sigma ~ U(0.1, 2) with p 0.5 (odd kernel of
    about 10 % of the image side: 3 px at 32, 7 px at 64, 11 px at 96), and a
    horizontal flip; then `(x - mean) / std`.

    Args:
        ds: dataset of `(image, label)` or `(image, label, id)`.
        batch_size: images per batch.
        image_size: output size (int or `(h, w)`).
        mean, std: per-channel statistics in [0, 1] units.
        seed: int seed (None: random).
        with_ids: add `"ids"` to the inputs dict (needs a dataset with ids).
        scale: area range of the crop.
        shuffle_buffer: shuffle buffer size (0: no shuffle).
        drop_remainder: drop the last partial batch.
        cache: cache the decoded, unbatched dataset in memory.
        epochs, initial_epoch: as in `pipeline`: with `epochs`, passes
            `initial_epoch..epochs - 1`, each randomised by `(seed, epoch)`.

    Returns:
        A `tf.data.Dataset` of `({"view1", "view2"[, "ids"]}, labels int64)`.
    """
    _check_positive_int(batch_size, "batch_size")
    size = _size_pair(image_size)
    if size is None:
        raise ValueError("`image_size` is required. Received: image_size=None")
    _check_stats(mean, "mean")
    _check_stats(std, "std")
    _check_epochs(epochs, initial_epoch, seed)
    has_ids = _element_parts(ds)
    if with_ids and not has_ids:
        raise ValueError(
            "`with_ids=True` needs a dataset that yields ids: use "
            "keras_amix.data.load(..., with_ids=True). Received a dataset of "
            "(image, label)."
        )
    static_hw = _static_hw(ds)

    def outputs(view1, view2, labels, ids):
        inputs = {"view1": view1, "view2": view2}
        if with_ids:
            inputs["ids"] = tf.cast(ids, tf.int64)
        return inputs, tf.cast(labels, tf.int64)

    def unpack(element):
        return element if has_ids else (*element, None)

    def per_element(element, element_seed):
        image, label, ids = unpack(element)
        view1, view2 = aug.augment_two_views(image[None], element_seed, size, mean, std, scale)
        return view1[0], view2[0], label, ids if ids is not None else tf.constant(-1, tf.int64)

    def per_batch(element, batch_seed):
        images, labels, ids = unpack(element)
        view1, view2 = aug.augment_two_views(images, batch_seed, size, mean, std, scale)
        return outputs(view1, view2, labels, ids)

    def one_pass(ds, keys):
        ds = _shuffle(ds, shuffle_buffer, seed, keys)
        batch = dict(drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
        if static_hw is None:
            ds = tf.data.Dataset.zip((ds, _seed_stream(seed, keys=keys)))
            ds = ds.map(per_element, num_parallel_calls=tf.data.AUTOTUNE)
            ds = ds.batch(batch_size, **batch)
            return ds.map(outputs, num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, **batch)
        ds = tf.data.Dataset.zip((ds, _seed_stream(seed, keys=keys)))
        return ds.map(per_batch, num_parallel_calls=tf.data.AUTOTUNE)

    if cache:
        ds = ds.cache()
    ds = _passes(ds, one_pass, seed, epochs, initial_epoch)
    return ds.prefetch(tf.data.AUTOTUNE)
