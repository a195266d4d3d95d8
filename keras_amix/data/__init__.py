"""Data: dataset sources, tf.data pipelines and augmentations (TensorFlow lives here).

Public API:
    load(name_or_path, split, *, data_dir=None, download=False, with_ids=False,
         shuffle_files=False, per_class_limit=None, skip_corrupt=False) -> tf.data.Dataset
        (refuses non-finite .npz pixels, empty class folders and undecodable
        image files with a ValueError naming them; skip_corrupt=True drops
        the files instead and logs their count)
    info(name_or_path, data_dir=None) -> DatasetInfo
    DATASETS: dict name -> DatasetInfo
    pipeline(ds, *, batch_size, num_classes, training, ...) -> tf.data.Dataset
    two_view_pipeline(ds, *, batch_size, image_size, mean, std, ...) -> tf.data.Dataset
    augment_two_views(images, seed, image_size, mean=None, std=None) -> (view1, view2)
    RandomResizedCrop: Keras layer (safe inside tf.data on every backend)
    random_resized_crop, random_flip, reflect_pad_crop, color_jitter,
    random_grayscale, random_gaussian_blur, gaussian_blur, normalize:
        stateless batch ops for tf.data maps.
"""

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
from keras_amix.data.registry import DATASETS
from keras_amix.data.registry import DatasetInfo
from keras_amix.data.sources import info
from keras_amix.data.sources import load
