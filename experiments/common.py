"""Shared plumbing of the experiment binaries: config resolution, run folders,
datasets, optimisers, distribution strategies and result files."""

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile

import keras

from keras_amix import backbones as backbones_lib
from keras_amix import data as data_lib

BACKBONES = {
    "resnet18": dict(depth=18),
    "resnet34": dict(depth=34),
    "resnet50": dict(depth=50),
    "resnet101": dict(depth=101),
    "resnext50": dict(depth=50, groups=32, width_per_group=4),
}


# Flags that mean the same in every binary: name -> help. Their defaults and
# types come from each binary's Config dataclass.
SHARED_FLAGS = {
    "dataset": "TFDS name, 'digits' (embedded), 'tiny_imagenet', 'fgvc_aircraft', an "
               "image-folder path (split/class/image) or an .npz file.",
    "data_dir": "Folder holding the data set (TFDS data_dir or archive).",
    "download": "Allow TFDS to download a missing data set.",
    "train_split": "Training split.",
    "test_split": "Evaluation split.",
    "image_size": "Image size (square).",
    "backbone": "|".join(BACKBONES),
    "width": "Backbone base width (64 = standard).",
    "stem": "cifar | imagenet",
    "alpha": "Beta(alpha, alpha) of lambda; default per method.",
    "epochs": "Training epochs.",
    "batch_size": "Global batch size.",
    "lr": "Peak learning rate (cosine decay to 0).",
    "weight_decay": "SGD weight decay.",
    "momentum": "SGD momentum.",
    "warmup_epochs": "Linear learning-rate warm-up.",
    "per_class_limit": "Keep the first N training images per class.",
    "test_per_class_limit": "Keep the first N test images per class.",
    "max_train_examples": "Truncate the training split.",
    "max_test_examples": "Truncate the evaluation split.",
    "seed": "Random seed.",
    "strategy": "default | mirrored (TF) | data_parallel (JAX)",
    "export": "Write a SavedModel into workdir/export.",
}


def define_flags(config_cls, names, **helps):
    """Defines the absl flags `names` (keys of SHARED_FLAGS) for a binary.

    Defaults and types come from the `config_cls` dataclass; `helps`
    overrides a help text where the binary gives the flag a narrower meaning.
    `allow_override`: the binaries share flag names and the tests import
    several of them into one process.
    """
    from absl import flags as absl_flags

    define = {str: absl_flags.DEFINE_string, int: absl_flags.DEFINE_integer,
              float: absl_flags.DEFINE_float, bool: absl_flags.DEFINE_bool}
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for name in names:
        field = fields[name]
        define[field.type](name, field.default, helps.get(name, SHARED_FLAGS[name]),
                           allow_override=True)


def resolve(config, flags, names):
    """Returns `config` with every flag in `names` that the user set applied."""
    updates = {}
    for name in names:
        if flags[name].present:
            updates[name] = flags[name].value
    return dataclasses.replace(config, **updates)


def check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"`--{name}` must be one of {sorted(allowed)}; received {value!r}.")


def check_positive(name, value):
    if value is None or value <= 0:
        raise ValueError(f"`--{name}` must be > 0; received {value!r}.")


def write_json(path, payload):
    """Writes JSON atomically: a failure never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def build_backbone(name, width, stem, image_size):
    check_choice("backbone", name, BACKBONES)
    check_positive("width", width)
    return backbones_lib.resnet(
        width=width, stem=stem, input_shape=(image_size, image_size, 3), **BACKBONES[name]
    )


def make_strategy(name):
    """Returns a `tf.distribute` strategy (or None) for `--strategy`."""
    check_choice("strategy", name, ("default", "mirrored", "data_parallel"))
    backend = keras.backend.backend()
    if name == "mirrored":
        if backend != "tensorflow":
            raise ValueError(
                f"`--strategy=mirrored` needs KERAS_BACKEND=tensorflow; the backend is {backend!r}."
            )
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    if name == "data_parallel":
        if backend != "jax":
            raise ValueError(
                f"`--strategy=data_parallel` needs KERAS_BACKEND=jax; the backend is {backend!r}."
            )
        keras.distribution.set_distribution(keras.distribution.DataParallel())
    return None


def load_split(cfg, info, split, per_class=None, max_examples=None, count=True):
    """(raw dataset, number of examples or None) of one split of `cfg.dataset`.

    `per_class` keeps the first N images of each class (class-balanced);
    TFDS sources, which cannot filter by class, take N x classes instead.
    """
    kwargs = {}
    if per_class is not None:
        if info.source == "tfds":
            max_examples = max_examples or per_class * info.num_classes
        else:
            kwargs["per_class_limit"] = per_class
    ds = data_lib.load(cfg.dataset, split, data_dir=cfg.data_dir, download=cfg.download,
                       **kwargs)
    if max_examples:
        ds = ds.take(max_examples)
    if not count:
        return ds, None
    n = int(ds.cardinality())
    if n < 0:  # unknown cardinality: count once (small data only)
        n = sum(1 for _ in ds)
    return ds, n


def strategy_scope(strategy):
    """`strategy.scope()`, or a no-op context when there is no strategy."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def save_keras_atomic(model, path):
    """`model.save(path)` through a temporary file: a failure keeps the old file."""
    tmp = path + ".tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def datasets(cfg, num_classes=None):
    """(train, test, info, steps_per_epoch) pipelines for a run config.

    `cfg.per_class_limit` / `cfg.test_per_class_limit` keep the first N images
    of each class (class-balanced, e.g. the DESIGN §12 budget and `--smoke`).
    """
    info = data_lib.info(cfg.dataset, data_dir=cfg.data_dir)
    train_raw, n_train = load_split(cfg, info, cfg.train_split, cfg.per_class_limit,
                                    cfg.max_train_examples)
    test_raw, _ = load_split(cfg, info, cfg.test_split, cfg.test_per_class_limit,
                             cfg.max_test_examples, count=False)
    common = dict(
        batch_size=cfg.batch_size,
        num_classes=num_classes or info.num_classes,
        image_size=cfg.image_size,
        mean=info.mean,
        std=info.std,
    )
    augment = None if cfg.augment == "none" else cfg.augment
    train = data_lib.pipeline(
        train_raw, training=True, augment=augment, seed=cfg.seed, cache=True, **common
    )
    test = data_lib.pipeline(test_raw, training=False, augment=None, cache=True, **common)
    return train, test, info, steps_per_epoch(cfg, n_train)


def steps_per_epoch(cfg, n_train):
    """Full batches per epoch; a ValueError when not even one batch fits."""
    steps = n_train // cfg.batch_size
    if steps < 1:
        raise ValueError(
            f"`--batch_size`={cfg.batch_size} is larger than the {n_train} training "
            f"examples of {cfg.dataset!r}; use a smaller batch."
        )
    return steps


def cosine_sgd(cfg, lr, steps_per_epoch):
    """SGD (`cfg.momentum`, `cfg.weight_decay`) with `cfg.warmup_epochs` of linear
    warm-up to `lr`, then a cosine to 0 at the end of `cfg.epochs`."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else lr, decay_steps=max(total - warmup, 1),
        warmup_target=lr if warmup else None, warmup_steps=warmup,
    )
    return keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay or None)


def run_callbacks(workdir, *extra):
    """The callbacks every training binary writes into `workdir`: a
    BackupAndRestore backup (a killed run resumes), TensorBoard logs and
    history.csv, then `extra`."""
    return [
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup")),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True),
        *extra,
    ]


def median_last(values, n=10):
    """The paper's report: the median of the last `n` epochs' values."""
    return statistics.median(values[-n:]) if values else float("nan")
