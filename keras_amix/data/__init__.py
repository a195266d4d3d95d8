"""Data: dataset sources, tf.data pipelines and augmentations (TensorFlow lives here).

Without TensorFlow installed only the TF-free parts load: `arrays` (in-memory
`.npz` data as a `keras.utils.PyDataset`), `npz` (the `.npz` format, read and
checked once for both input paths), `registry`, `DatasetInfo` and `DATASETS`;
the other names raise an ImportError that says so.

Public API:
    load(name_or_path, split, *, data_dir=None, download=False, with_ids=False,
         shuffle_files=False, per_class_limit=None, skip_corrupt=False) -> tf.data.Dataset
        (refuses non-finite .npz pixels, empty class folders and undecodable
        image files with a ValueError naming them; skip_corrupt=True drops
        the files instead and logs their count)
    info(name_or_path, data_dir=None) -> DatasetInfo
    split_labels(name_or_path, split, *, data_dir=None, per_class_limit=None)
        -> int64 labels in `load`'s order, no image decoded (None for TFDS)
    DATASETS: dict name -> DatasetInfo
    pipeline(ds, *, batch_size, num_classes, training, ...) -> tf.data.Dataset
    two_view_pipeline(ds, *, batch_size, image_size, mean, std, ...) -> tf.data.Dataset
    augment_two_views(images, seed, image_size, mean=None, std=None) -> (view1, view2)
    RandomResizedCrop: Keras layer (safe inside tf.data on every backend)
    random_resized_crop, random_flip, reflect_pad_crop, color_jitter,
    random_grayscale, random_gaussian_blur, gaussian_blur, normalize:
        stateless batch ops for tf.data maps.
    arrays.load_npz(path) -> ({split: (images, labels)}, DatasetInfo)
        (= npz.load; `load` and `info` read .npz files through `npz` too)
    ArrayBatches(images, labels, *, batch_size, num_classes, training, ...):
        TF-free keras.utils.PyDataset twin of `pipeline` for in-memory uint8 arrays.
    TwoViewBatches(images, labels, *, batch_size, num_classes, image_size, ...):
        TF-free twin of `two_view_pipeline` (MoCo v2 views in NumPy,
        `keras_amix.data.numpy_augment`).
"""

import importlib.util

from keras_amix.data import arrays
from keras_amix.data import npz
from keras_amix.data import registry
from keras_amix.data.arrays import ArrayBatches
from keras_amix.data.arrays import TwoViewBatches
from keras_amix.data.registry import DATASETS
from keras_amix.data.registry import DatasetInfo

if importlib.util.find_spec("tensorflow") is not None:
    from keras_amix.data.augment import augment_two_views
    from keras_amix.data.augment import blur_kernel_size
    from keras_amix.data.augment import color_jitter
    from keras_amix.data.augment import gaussian_blur
    from keras_amix.data.augment import grayscale
    from keras_amix.data.augment import moco_v2_view
    from keras_amix.data.augment import normalize
    from keras_amix.data.augment import random_flip
    from keras_amix.data.augment import random_gaussian_blur
    from keras_amix.data.augment import random_grayscale
    from keras_amix.data.augment import reflect_pad_crop
    from keras_amix.data.pipeline import pipeline
    from keras_amix.data.pipeline import two_view_pipeline
    from keras_amix.data.random_resized_crop import RandomResizedCrop
    from keras_amix.data.random_resized_crop import random_resized_crop
    from keras_amix.data.sources import info
    from keras_amix.data.sources import load
    from keras_amix.data.sources import split_labels
else:
    _NEEDS_TENSORFLOW = (
        "augment_two_views", "blur_kernel_size", "color_jitter", "gaussian_blur",
        "grayscale", "moco_v2_view", "normalize", "random_flip", "random_gaussian_blur",
        "random_grayscale", "reflect_pad_crop", "pipeline", "two_view_pipeline",
        "RandomResizedCrop", "random_resized_crop", "info", "load", "split_labels",
    )

    def __getattr__(name):
        if name in _NEEDS_TENSORFLOW:
            raise ImportError(
                f"keras_amix.data.{name} needs TensorFlow, which is not installed; without "
                "it, in-memory .npz data loads through keras_amix.data.arrays."
            )
        raise AttributeError(f"module 'keras_amix.data' has no attribute {name!r}")
