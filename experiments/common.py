"""Shared plumbing of the experiment binaries: flags and their checks, config
resolution, run folders, datasets, optimisers, distribution strategies and
result files.

Nothing here imports Keras (or TensorFlow) at module level: a binary parses
and checks its flags, and answers `--help`, before the heavy imports run.
"""

import contextlib
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile

from absl import flags as absl_flags
from absl import logging as absl_logging

# The flags `define_config_flags` defines belong to the calling binary (listed
# under its name by `--help`), not to this module.
absl_flags.disclaim_key_flags()

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
    "dataset": "TFDS name, 'digits' or 'scattered_digits' (embedded), 'tiny_imagenet', "
               "'fgvc_aircraft', an image-folder path (split/class/image) or an .npz file.",
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
    "lr": "Peak learning rate (cosine decay to --min_lr).",
    "min_lr": "Floor of the cosine learning-rate schedule; default per method.",
    "weight_decay": "SGD weight decay.",
    "weight_decay_mode": "coupled: PyTorch's SGD as the paper trains (wd*w added to the "
                         "gradient before the momentum) | decoupled: Keras' SGD "
                         "(w -= lr*wd*w, about 10x weaker at momentum 0.9).",
    "momentum": "SGD momentum.",
    "warmup_epochs": "Linear learning-rate warm-up.",
    "per_class_limit": "Keep the first N training images per class.",
    "test_per_class_limit": "Keep the first N test images per class.",
    "max_train_examples": "Truncate the training split.",
    "max_test_examples": "Truncate the evaluation split.",
    "seed": "Random seed.",
    "strategy": "default | mirrored (TF) | data_parallel (JAX)",
    "export": "Write a SavedModel into workdir/export.",
    "deterministic": "Reproducible runs: sets TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow "
                     "loads (oneDNN's reordered float sums differ between runs) and enables "
                     "TensorFlow op determinism. Slower.",
    "run_eagerly": "Run the training and evaluation steps eagerly, without tf.function or "
                   "jax.jit (Keras' compile(run_eagerly=True)): for debugging, and for tiny "
                   "runs, where tracing the step costs more than the steps. Slower otherwise.",
}

def library_names(path):
    """A plain-Python file of the package (e.g. "mixers/names.py") as a dict of its
    globals, read without importing keras_amix (which imports Keras): the flags are
    checked before Keras loads."""
    import importlib.util
    import runpy

    package = os.path.dirname(importlib.util.find_spec("keras_amix").origin)
    return runpy.run_path(os.path.join(package, *path.split("/")))


def mixer_names():
    """`keras_amix/mixers/names.py` (`DEFAULT_ALPHA`, `CROSS_VIEW`): the registered
    mixers and their default α."""
    return library_names("mixers/names.py")


# Names the library defines, kept here so that flags are checked before Keras
# loads; tests/experiments/test_cli.py asserts they equal the library's.
STEMS = ("cifar", "imagenet")
STRATEGIES = ("default", "mirrored", "data_parallel")
FEATURE_STAGES = ("stage1", "stage2", "stage3", "stage4")  # backbones.STAGE_NAMES
STAGE_STRIDES = {  # backbones.output_stride(backbone, stage) per stem
    "cifar": dict(stage1=1, stage2=2, stage3=4, stage4=8),
    "imagenet": dict(stage1=4, stage2=8, stage3=16, stage4=32),
}
MIX_LOSSES = ("ce", "pbce", "ce+pbce", "bce", "ce+bce")  # models.amix.MIX_LOSSES
TFDS_DATASETS = ("cifar10", "cifar100", "stl10", "caltech_birds2011", "imagenet2012")
EMBEDDED_DATASETS = ("digits", "scattered_digits")  # data.DATASETS entries with source "digits"


def flag(default, help, check=None, comma_list=False):
    """A config field declared once: its default, its flag's `--help` text and its check.

    `define_config_flags` turns every field of a binary's `Config` into a flag;
    a field without `flag(...)` takes its help (and check) from `SHARED_FLAGS`
    (`SHARED_CHECKS`). `check` defaults to the shared one of the same name. A
    tuple field is a repeatable flag (`--x=a --x=b`), or with `comma_list` one
    comma-separated flag (`--x=a,b`).
    """
    return dataclasses.field(default=default, metadata={"help": help, "check": check,
                                                        "comma_list": comma_list})


_DEFINE = {str: absl_flags.DEFINE_string, int: absl_flags.DEFINE_integer,
           float: absl_flags.DEFINE_float, bool: absl_flags.DEFINE_bool,
           tuple: absl_flags.DEFINE_multi_string}


def define_config_flags(config_cls, flag_values):
    """Defines one absl flag per field of the `config_cls` dataclass in `flag_values`
    (the binary's own `FlagValues`): the field's name, type and default, its help
    from `flag(...)` or `SHARED_FLAGS`. A tuple field is a repeatable string flag.

    Returns the fields' checks ({name: check}, bools need none), for the binary's
    `CHECKS` table; a field with neither a help nor a shared one is a TypeError.
    """
    checks = {}
    for field in dataclasses.fields(config_cls):
        help_text = field.metadata.get("help") or SHARED_FLAGS.get(field.name)
        if help_text is None or field.type not in _DEFINE:
            raise TypeError(f"Config field {field.name!r} needs common.flag(default, help) "
                            f"and a type in {[t.__name__ for t in _DEFINE]}; got {field.type!r}.")
        define, default = _DEFINE[field.type], field.default
        if field.type is tuple:
            default = [str(v) for v in default]
            if field.metadata.get("comma_list"):
                define = absl_flags.DEFINE_list
        define(field.name, default, help_text, flag_values=flag_values)
        check = field.metadata.get("check") or SHARED_CHECKS.get(field.name)
        if check is not None:
            checks[field.name] = check
    return checks


def binary_flags(config_cls, presets, workdir, smoke, doc, workdir_help="Output folder."):
    """The flags of a binary, in its own `absl.flags.FlagValues` (not absl's global
    FLAGS, so that binaries sharing flag names import into one process):
    `--preset` (a key of `presets`), one flag per field of `config_cls`
    (`define_config_flags`), `--smoke` (help `smoke`) and `--workdir` (default
    `workdir`, help `workdir_help`). Every check runs when the flags are parsed (and again, through
    `check_fields`, on the resolved config).

    Returns (flag_values, checks, parse): `parse` is `app.run`'s
    `flags_parser` (`flags_parser(flag_values, doc)`).
    """
    values = absl_flags.FlagValues()
    absl_flags.DEFINE_enum("preset", "demo", sorted(presets),
                           "Starting configuration; flags override it.", flag_values=values)
    checks = {**define_config_flags(config_cls, values), "workdir": text()}
    absl_flags.DEFINE_bool("smoke", False, smoke, flag_values=values)
    absl_flags.DEFINE_string("workdir", workdir, workdir_help, flag_values=values)
    register_checks(checks, values)
    return values, checks, flags_parser(values, doc)


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


# ------------------------------------------------------------------- checks
# A check is `check(name, value)` raising a ValueError that names `--name`.
# Each binary maps its flags to checks (`CHECKS`); `register_checks` runs them
# when the flags are parsed and `check_fields` on the resolved config (presets
# included), both in plain Python before Keras is imported.


def number(low=None, high=None, *, low_open=False, high_open=False, integer=False,
           optional=False):
    """A check: `value` is a finite number (an int if `integer`) within the
    bounds, open or closed; `None` passes when `optional`."""
    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high}"
    else:
        bounds = ""
    wanted = kind + bounds + (" (or unset)" if optional else "")

    def check(name, value):
        if value is None and optional:
            return
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        ok = ok and (low is None or (value > low if low_open else value >= low))
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            raise ValueError(f"`--{name}` must be {wanted}; received {value!r}.")

    return check


def choice(allowed):
    """A check: `value` is one of `allowed`."""
    return lambda name, value: check_choice(name, value, allowed)


def text(optional=False):
    """A check: `value` is a non-empty string; `None` passes when `optional`."""

    def check(name, value):
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`--{name}` must be a non-empty string; received {value!r}.")

    return check


SEED = number(0, 2**32 - 1, integer=True)  # numpy's seed range
LIMIT = number(1, integer=True, optional=True)  # a count that truncates: >= 1 or unset

# The checks of the flags in SHARED_FLAGS (bools need none): one definition for
# every binary; `define_flags` returns the ones a binary defines.
SHARED_CHECKS = {
    "dataset": text(),
    "data_dir": text(optional=True),
    "train_split": text(),
    "test_split": text(),
    "image_size": number(1, integer=True),
    "backbone": choice(BACKBONES),
    "width": number(1, integer=True),
    "stem": choice(STEMS),
    "alpha": number(0, low_open=True, optional=True),
    "epochs": number(1, integer=True),
    "batch_size": number(1, integer=True),
    "lr": number(0, low_open=True),
    "min_lr": number(0, optional=True),
    "weight_decay": number(0),
    "weight_decay_mode": choice(("coupled", "decoupled")),
    "momentum": number(0, 1, high_open=True),
    "warmup_epochs": number(0, integer=True),
    "per_class_limit": LIMIT,
    "test_per_class_limit": LIMIT,
    "max_train_examples": LIMIT,
    "max_test_examples": LIMIT,
    "seed": SEED,
    "strategy": choice(STRATEGIES),
}


def register_checks(checks, flag_values):
    """Runs `checks[name]` on each flag `--name` of `flag_values` when they are parsed."""
    for name, check in checks.items():
        absl_flags.register_validator(name, _validator(name, check), flag_values=flag_values)


def _validator(name, check):
    def validator(value):
        try:
            check(name, value)
        except ValueError as err:
            raise absl_flags.ValidationError(str(err)) from None
        return True

    return validator


def check_fields(cfg, checks):
    """Runs `checks` on the fields of a resolved config (flags without a field are skipped)."""
    for name, check in checks.items():
        if hasattr(cfg, name):
            check(name, getattr(cfg, name))


def check_schedule(cfg):
    """The learning-rate schedule's combinations: warm-up shorter than the
    run, a floor below the peak."""
    if cfg.warmup_epochs >= cfg.epochs:
        raise ValueError(
            f"`--warmup_epochs` must be < `--epochs` ({cfg.epochs}); "
            f"received {cfg.warmup_epochs} (presets set it; --warmup_epochs=0 trains "
            "without warm-up)."
        )
    min_lr = getattr(cfg, "min_lr", None)
    if min_lr is not None and min_lr > cfg.lr:
        raise ValueError(f"`--min_lr` must be <= `--lr` ({cfg.lr}); received {min_lr}.")


def check_data_flags(cfg):
    """Refuses `--data_dir` / `--download` where the data set would ignore them."""
    key = cfg.dataset.lower().replace("-", "_")
    registered = not os.path.exists(cfg.dataset)
    if registered and key in EMBEDDED_DATASETS:
        for name in ("data_dir", "download"):
            if getattr(cfg, name):
                raise ValueError(
                    f"`--{name}` has no effect on the embedded {cfg.dataset!r} data set; "
                    f"received --{name}={getattr(cfg, name)!r}."
                )
    if cfg.download and not (registered and key in TFDS_DATASETS):
        raise ValueError(
            f"`--download` applies to the TFDS data sets {list(TFDS_DATASETS)} only; "
            f"--dataset={cfg.dataset!r} is never downloaded."
        )


def refuse_unused(flag_values, names, reason):
    """Refuses each flag in `names` that the user set: with `reason`, it has no effect."""
    for name in names:
        if flag_values[name].present:
            raise ValueError(f"`--{name}` has no effect {reason}.")


def no_arguments(argv):
    if len(argv) > 1:
        raise ValueError(
            f"takes flags only (--name=value); received the arguments {argv[1:]!r}."
        )


def usage_error(message):
    """Prints `message` as one usage line, as absl reports a bad flag, and exits (status 2)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "binary"
    message = " ".join(str(message).split())
    sys.stderr.write(f"{prog}: error: {message} (see --help)\n")
    sys.exit(2)


@contextlib.contextmanager
def usage_errors():
    """Turns a ValueError from the config checks into `usage_error` (no traceback)."""
    try:
        yield
    except ValueError as err:
        usage_error(err)


HELP_ARGS = ("-h", "-?", "-help", "--help", "-helpshort", "--helpshort", "-helpfull",
             "--helpfull")


def flags_parser(flag_values, doc):
    """`app.run`'s `flags_parser` for a binary whose flags live in its own
    `FlagValues` (so that binaries sharing flag names import into one process
    without `allow_override`): `--help` prints `doc` and every flag of the binary
    with its default, then exits 0; the binary's flags are parsed (their checks
    run as validators), the rest goes to absl's own flags (`--verbosity`, ...);
    a bad flag is one `usage_error` line."""

    def parse(argv):
        if any(arg in HELP_ARGS for arg in argv[1:]):
            sys.stdout.write(f"{doc.strip()}\n\nflags:\n\n"
                             f"{flag_values.get_help(include_special_flags=False)}\n")
            sys.exit(0)
        try:
            rest = flag_values(argv, known_only=True)
            argv = absl_flags.FLAGS(rest)
        except absl_flags.Error as err:
            usage_error(err)
        if not absl_flags.FLAGS["verbosity"].present:
            # absl shows INFO, and TensorFlow logs through absl and its own logger:
            # its INFO lines (a page of renamed inputs per SavedModel export) would
            # drown the run's own output (printed). --verbosity=0 shows them.
            absl_logging.set_verbosity(absl_logging.WARNING)
            logging.getLogger("tensorflow").setLevel(logging.WARNING)
        return argv

    return parse


def write_text(path, text):
    """Writes `text` atomically, with the usual file mode (0666 less the umask):
    a failure never leaves a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        umask = os.umask(0o022)  # mkstemp made the file 0600: give it the usual mode
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_figure(fig, path, dpi=120):
    """Writes the matplotlib `fig` to the PNG `path` through a temporary file (a kill
    never leaves a half-written picture), then closes it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_json(path, payload):
    """Writes JSON atomically: a failure never leaves a half-written file."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def build_backbone(name, width, stem, image_size, bn_splits=1):
    from keras_amix import backbones as backbones_lib

    check_choice("backbone", name, BACKBONES)
    check_positive("width", width)
    return backbones_lib.resnet(
        width=width, stem=stem, input_shape=(image_size, image_size, 3), bn_splits=bn_splits,
        **BACKBONES[name]
    )


def make_strategy(name):
    """Returns a `tf.distribute` strategy (or None) for `--strategy`."""
    import keras

    check_choice("strategy", name, STRATEGIES)
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


def load_split(cfg, info, split, per_class=None, max_examples=None, count=True,
               with_ids=False, flag="train_split"):
    """(raw dataset, number of examples or None) of one split of `cfg.dataset`.

    `per_class` keeps the first N images of each class (class-balanced);
    TFDS sources, which cannot filter by class, take N x classes instead.
    Then `max_examples` keeps the first N (refused, naming the flag of
    `flag`'s split, where that leaves out classes: see `check_truncation`).
    `with_ids` yields `(image, label, id)` with ids 0..n-1 over the examples
    kept (what a memory bank over the training set indexes).
    """
    from keras_amix import data as data_lib

    kwargs = {}
    if per_class is not None:
        if info.source == "tfds":
            max_examples = max_examples or per_class * info.num_classes
        else:
            kwargs["per_class_limit"] = per_class
    if max_examples and info.source != "tfds":
        labels = data_lib.split_labels(cfg.dataset, split, data_dir=cfg.data_dir, **kwargs)
        check_truncation(cfg, labels, max_examples, split, flag)
    ds = data_lib.load(cfg.dataset, split, data_dir=cfg.data_dir, download=cfg.download,
                       **kwargs)
    if max_examples:
        ds = ds.take(max_examples)
    if with_ids:
        ds = ds.enumerate().map(lambda i, element: (element[0], element[1], i))
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
    """`model.save(path)` through a temporary file: a failure keeps the old file.

    A model with a NaN or infinite weight is refused (ValueError naming it).
    """
    from keras_amix.training.callbacks import check_finite_weights

    check_finite_weights(model, repr(path))
    tmp = path + TMP_KERAS
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


INPUTS = ("auto", "numpy", "tfdata")


def input_field():
    """The `--input` config field of the training binaries (see `input_kind`)."""
    return flag("auto", "Input path: tfdata | numpy (an .npz file in memory, no TensorFlow) | "
                "auto (numpy when TensorFlow is not installed and the data set is an .npz "
                "file).", choice(INPUTS))


def check_environment(cfg):
    """What a run needs of the installed packages: its input path
    (`input_kind`), and TensorFlow for the SavedModel export."""
    input_kind(cfg)
    if cfg.export and not tensorflow_available():
        raise ValueError("`--export` writes a SavedModel, which needs TensorFlow (not "
                         "installed): pass --noexport.")


def tensorflow_available():
    """Whether TensorFlow is installed (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


# A data set's own size is used up to this side (the paper's ImageNet size; also the
# size when its images' sizes differ). The paper trains 32-64 px images with the
# CIFAR stem and 96-224 px ones (STL-10, ImageNet, CUB) with the ImageNet stem.
OWN_SIZE_MAX = 224
CIFAR_STEM_MAX = 64
# A split a preset names, and the splits that stand in for it in a user's data
# set that lacks it (an ImageNet-style folder has train/ and val/).
SPLIT_STAND_INS = {"test": ("val", "validation", "valid"), "val": ("test", "validation"),
                   "validation": ("val", "test")}


def dataset_info(cfg):
    """The `DatasetInfo` of `cfg.dataset` (an .npz file read without TensorFlow)."""
    if str(cfg.dataset).endswith(".npz") and os.path.isfile(cfg.dataset):
        from keras_amix.data import npz

        return npz.info(cfg.dataset)
    from keras_amix import data as data_lib

    return data_lib.info(cfg.dataset, data_dir=cfg.data_dir)


def _own_splits(cfg, info, flag_values):
    """The split fields of `cfg` (`train_split`, and `test_split` where the
    binary has one) that name a split the data set lacks: a stand-in of
    `SPLIT_STAND_INS` where the flag was not given ("val" for "test"), else a
    ValueError naming the flag, the split and the data set's splits. TFDS
    split strings ("train[:90%]", "train+unlabelled") are left to TFDS."""
    if info.source == "tfds":
        return {}
    updates = {}
    for name in ("train_split", "test_split"):
        split = getattr(cfg, name, None)
        if split is None or split in info.splits:
            continue
        stand_in = next((s for s in SPLIT_STAND_INS.get(split, ()) if s in info.splits), None)
        if stand_in is None or flag_values[name].present:
            raise ValueError(
                f"`--{name}` must be a split of --dataset={cfg.dataset!r}, one of "
                f"{list(info.splits)}; received {split!r}"
                + ("" if flag_values[name].present else " (the preset's)") + ".")
        updates[name] = stand_in
    return updates


def own_data_defaults(cfg, preset, flag_values, fields=("image_size", "augment", "stem")):
    """`cfg` with the data set's own image size, augmentation and stem where the
    preset's do not apply: a preset's are its own data set's, so with another
    `--dataset` (and without the flag) a field takes the data set's value
    (`DatasetInfo`): `image_size` its images' common size (the shorter side, at
    most `OWN_SIZE_MAX`; that when the sizes differ), `augment` its augmentation,
    `stem` the CIFAR stem up to `CIFAR_STEM_MAX` px, else the ImageNet stem;
    the size rounded down to a multiple of the stride of the stage the Mix
    Block reads (AutoMix / AMix need it; 4 px with the CIFAR stem at stage 3).
    Its splits too: a data set without the preset's test split takes its "val"
    (`_own_splits`); a split it lacks is a ValueError before any work.
    Returns `(cfg, a line naming what was set, or None)`."""
    if not flag_values["dataset"].present or cfg.dataset == preset.dataset:
        return cfg, None
    check_data_flags(cfg)  # before the data set is read
    info = dataset_info(cfg)
    updates = _own_splits(cfg, info, flag_values)
    own_size = "image_size" in fields and not flag_values["image_size"].present
    if own_size:
        size = info.image_size
        updates["image_size"] = min(min(size), OWN_SIZE_MAX) if size else OWN_SIZE_MAX
    if "augment" in fields and not flag_values["augment"].present and info.augment:
        updates["augment"] = info.augment
    if "stem" in fields and not flag_values["stem"].present:
        size = updates.get("image_size", cfg.image_size)
        updates["stem"] = "cifar" if size <= CIFAR_STEM_MAX else "imagenet"
    if own_size:  # a multiple of the stride of the stage the Mix Block reads (30 -> 28)
        stride = STAGE_STRIDES[updates.get("stem", cfg.stem)][
            getattr(cfg, "feature_stage", "stage3")]
        updates["image_size"] = max(stride, updates["image_size"] // stride * stride)
    changed = {name: value for name, value in updates.items() if getattr(cfg, name) != value}
    if not changed:
        return cfg, None
    said = ", ".join(f"--{name}={value}" for name, value in changed.items())
    return dataclasses.replace(cfg, **changed), (
        f"--dataset={cfg.dataset} is not the preset's data set: {said} from the data set "
        "(pass the flags to choose).")


def eval_augment(augment, info, image_size):
    """The test pipeline's `augment`: "imagenet" (the shorter side to
    `image_size / 0.875`, then the centre crop: the official resize 256 / crop
    224) when training uses the ImageNet augmentation on images larger than
    `image_size` or of differing sizes (ImageNet, CUB, folders of photos);
    else None, a plain resize (CIFAR; Tiny-ImageNet and STL-10 at their own
    size, as the official configs evaluate them)."""
    if augment == "imagenet" and (info.image_size is None or min(info.image_size) > image_size):
        return "imagenet"
    return None


def input_kind(cfg):
    """The input path of `cfg.input`: "numpy" (`keras_amix.data.ArrayBatches`,
    no TensorFlow) or "tfdata". "auto" is numpy when TensorFlow is not
    installed and the data set is an .npz file, tfdata otherwise. A ValueError
    names `--input` where the choice cannot work."""
    check_choice("input", cfg.input, INPUTS)
    is_npz = cfg.dataset.endswith(".npz") and os.path.isfile(cfg.dataset)
    have_tf = tensorflow_available()
    kind = cfg.input if cfg.input != "auto" else ("numpy" if is_npz and not have_tf else "tfdata")
    if kind == "numpy" and not is_npz:
        raise ValueError(
            f"`--input=numpy` reads .npz files only; --dataset={cfg.dataset!r} is not an "
            "existing .npz file (TFDS names and image folders need --input=tfdata)."
        )
    if kind == "tfdata" and not have_tf:
        raise ValueError(
            f"--dataset={cfg.dataset!r} with `--input={cfg.input}` needs tf.data, and "
            "TensorFlow is not installed: without it only .npz files can be read "
            "(--input=numpy)."
        )
    return kind


def datasets(cfg, num_classes=None, initial_epoch=0):
    """(train, test, info, steps_per_epoch) pipelines for a run config.

    `cfg.per_class_limit` / `cfg.test_per_class_limit` keep the first N images
    of each class (class-balanced, e.g. the DESIGN §12 budget and `--smoke`).
    The training pipeline holds epochs `initial_epoch..cfg.epochs - 1`, each
    shuffled and augmented as a function of (cfg.seed, epoch) (see
    `pass_epochs`): fit it with `steps_per_epoch` and `initial_epoch`.
    With `input_kind(cfg) == "numpy"` both are `keras_amix.data.ArrayBatches`
    (no TensorFlow), else tf.data pipelines.
    """
    if input_kind(cfg) == "numpy":
        return _array_datasets(cfg, num_classes, initial_epoch)
    from keras_amix import data as data_lib

    info = data_lib.info(cfg.dataset, data_dir=cfg.data_dir)
    train_raw, n_train = load_split(cfg, info, cfg.train_split, cfg.per_class_limit,
                                    cfg.max_train_examples)
    test_raw, _ = load_split(cfg, info, cfg.test_split, cfg.test_per_class_limit,
                             cfg.max_test_examples, count=False, flag="test_split")
    common = dict(
        batch_size=cfg.batch_size,
        num_classes=num_classes or info.num_classes,
        image_size=cfg.image_size,
        mean=info.mean,
        std=info.std,
    )
    augment = None if cfg.augment == "none" else cfg.augment
    train = data_lib.pipeline(
        train_raw, training=True, augment=augment, seed=cfg.seed, cache=True,
        **pass_epochs(cfg, initial_epoch), **common
    )
    test = data_lib.pipeline(test_raw, training=False, cache=True,
                             augment=eval_augment(cfg.augment, info, cfg.image_size), **common)
    return train, test, info, steps_per_epoch(cfg, n_train)


def array_split(cfg, splits, name, flag, per_class=None, max_examples=None):
    """(images, labels) of split `name` of `arrays.load_npz(cfg.dataset)`'s
    `splits`: the first `per_class` of each class, then the first
    `max_examples` (as `load_split`); a ValueError names `--flag`."""
    import numpy as np

    from keras_amix.data import arrays

    if name not in splits:
        raise ValueError(f"`--{flag}`={name!r} is not a split of {cfg.dataset!r}; "
                         f"it holds {sorted(splits)}.")
    images, labels = splits[name]
    keep = np.arange(len(labels))
    if per_class is not None:
        keep = arrays.first_per_class(labels, per_class)
    check_truncation(cfg, labels[keep], max_examples, name, flag)
    keep = keep[:max_examples]
    return images[keep], labels[keep]


def grouped_by_class(labels):
    """Whether `labels` hold each class in one block (a folder's listing, the
    package's .npz files): their first N examples are then a class or two."""
    import numpy as np

    labels = np.asarray(labels)
    changes = int(np.count_nonzero(labels[1:] != labels[:-1]))
    return len(labels) > 1 and changes == len(np.unique(labels)) - 1


def check_truncation(cfg, labels, max_examples, split, flag):
    """Refuses a `--max_*_examples` that keeps fewer classes than it could.

    `labels` are the split's in loading order, before the truncation. Folders
    list (and the package's .npz writer keeps) their images class by class, so
    the first N examples may be a class or two: a run on them scores well on
    nothing. Refused where the split is grouped by class (each class one
    block) and the first N leave classes out; a shuffled split's first N are a
    random subset, kept. The ValueError names the class-balanced flag.
    """
    import numpy as np

    if not max_examples or labels is None or len(labels) <= max_examples:
        return
    present = len(np.unique(labels))
    kept = len(np.unique(np.asarray(labels)[:max_examples]))
    if grouped_by_class(labels) and kept < min(present, max_examples):
        limit = "max_train_examples" if flag == "train_split" else "max_test_examples"
        per_class_flag = "per_class_limit" if flag == "train_split" else "test_per_class_limit"
        raise ValueError(
            f"`--{limit}`={max_examples} keeps {kept} of the {present} classes of split "
            f"{split!r} of {cfg.dataset!r} (its examples are ordered by class); use "
            f"--{per_class_flag} for a class-balanced subset.")


def _array_datasets(cfg, num_classes, initial_epoch):
    """`datasets` from an .npz file held in memory, without TensorFlow."""
    import numpy as np

    from keras_amix.data import arrays

    if cfg.augment not in ("cifar", "none"):
        raise ValueError(f"`--input=numpy` supports --augment=cifar|none; received "
                         f"--augment={cfg.augment!r} (use --input=tfdata).")
    splits, info = arrays.load_npz(cfg.dataset)

    def split(name, flag, per_class, max_examples):
        return array_split(cfg, splits, name, flag, per_class, max_examples)

    common = dict(batch_size=cfg.batch_size, num_classes=num_classes or info.num_classes,
                  image_size=cfg.image_size, mean=info.mean, std=info.std)
    train_images, train_labels = split(cfg.train_split, "train_split", cfg.per_class_limit,
                                       cfg.max_train_examples)
    steps_per_epoch(cfg, len(train_labels))  # a ValueError naming --batch_size
    train = arrays.ArrayBatches(
        train_images, train_labels, training=True, augment=cfg.augment, seed=cfg.seed,
        **pass_epochs(cfg, initial_epoch), **common)
    test = arrays.ArrayBatches(
        *split(cfg.test_split, "test_split", cfg.test_per_class_limit, cfg.max_test_examples),
        training=False, **common)
    return train, test, info, train.steps_per_epoch


def first_images(ds, n):
    """The first `n` images of the first batch of a test set (tf.data or a PyDataset)."""
    import keras
    import numpy as np

    batch = ds[0] if isinstance(ds, keras.utils.PyDataset) else next(iter(ds))
    return np.asarray(batch[0])[:n]


def steps_per_epoch(cfg, n_train):
    """Full batches per epoch; a ValueError when not even one batch fits."""
    steps = n_train // cfg.batch_size
    if steps < 1:
        raise ValueError(
            f"`--batch_size`={cfg.batch_size} is larger than the {n_train} training "
            f"examples of {cfg.dataset!r}; use a smaller batch."
        )
    return steps


def cosine_sgd(cfg, lr, steps_per_epoch, min_lr=0.0):
    """SGD (`cfg.momentum`, `cfg.weight_decay`) with `cfg.warmup_epochs` of linear
    warm-up to `lr`, then a cosine to `min_lr` at the end of `cfg.epochs`.

    `cfg.weight_decay_mode` "coupled" (default): PyTorch's SGD, as the paper
    trains (`keras_amix.training.optimizers.CoupledSGD`, wd·w added to the
    gradient before the momentum); "decoupled": Keras' SGD (w ← w − lr·wd·w).
    """
    import keras

    from keras_amix.training.optimizers import CoupledSGD

    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    # Keras' cosine ends at alpha × the rate it decays from.
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else lr, decay_steps=max(total - warmup, 1), alpha=min_lr / lr,
        warmup_target=lr if warmup else None, warmup_steps=warmup,
    )
    sgd = CoupledSGD if cfg.weight_decay_mode == "coupled" else keras.optimizers.SGD
    return sgd(learning_rate=schedule, momentum=cfg.momentum,
               weight_decay=cfg.weight_decay or None)


def run_callbacks(workdir, *extra):
    """The callbacks every training binary writes into `workdir`, in order:

    1. `TerminateOnNonFinite`: a NaN / infinite loss term raises inside the
       batch, before anything of that epoch is written;
    2. TensorBoard logs (where TensorFlow is installed) and history.csv
       (appended; `start_run` drops rows the backup does not hold);
    3. `extra`;
    4. last, the backup (`AtomicBackupAndRestore`, never half-written and
       never non-finite): an epoch is in history.csv before the backup counts
       it. It is kept when `fit` ends; `finish_run` drops it once the final
       outputs are written.
    """
    import keras

    from keras_amix.training import callbacks

    tensorboard = []
    if tensorflow_available():
        tensorboard = [keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard"))]
    else:
        print("TensorFlow is not installed: no TensorBoard logs (history.csv has the "
              "per-epoch logs).")
    return [
        callbacks.TerminateOnNonFinite(),
        *tensorboard,
        keras.callbacks.CSVLogger(os.path.join(workdir, HISTORY), append=True),
        *extra,
        callbacks.AtomicBackupAndRestore(os.path.join(workdir, BACKUP), delete_checkpoint=False),
    ]


# ------------------------------------------------------------ run lifecycle
# A run folder is finished when it holds no backup: `finish_run` drops the
# backup only after model.keras, the export and metrics.json are written, so
# a kill at any point before that resumes (at worst re-doing the final
# outputs from the complete backup, without training).
BACKUP = "backup"
HISTORY = "history.csv"
EPOCH_SECONDS = "epoch_seconds.json"  # each epoch's training time (`EpochTimer(path=...)`)
TMP_KERAS = ".tmp.keras"  # save_keras_atomic's temporary file: <path>.tmp.keras
# Left behind by a kill: export_saved_model's folders, save_keras_atomic's and
# write_json's temporary files.
PARTIAL_OUTPUTS = (".*.tmp-*", ".*.old-*", "*" + TMP_KERAS, "*.tmp")


def start_run(workdir):
    """Prepares `workdir` for `fit`; returns the epoch training resumes at.

    Removes the partial outputs a killed run left (temporary export folders
    and files), and the rows of history.csv and the times of epoch_seconds.json
    from that epoch on (a kill between history.csv and the backup, or a new
    run in a finished folder), so that both hold every epoch once.
    """
    import glob
    import shutil

    from keras_amix.training.callbacks import backup_epoch

    for pattern in PARTIAL_OUTPUTS:
        for path in glob.glob(os.path.join(workdir, pattern)):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    epoch = backup_epoch(os.path.join(workdir, BACKUP))
    path = os.path.join(workdir, HISTORY)
    if os.path.exists(path):
        with open(path, newline="") as f:
            lines = f.read().splitlines(keepends=True)
        # A row cut by a kill has no newline; it is of an epoch the backup lacks.
        kept = lines[:1] + [line for line in lines[1:] if line.endswith("\n")
                            and line.strip() and int(line.split(",", 1)[0]) < epoch]
        if epoch == 0:
            os.remove(path)
        elif kept != lines:
            write_text(path, "".join(kept))
    path = os.path.join(workdir, EPOCH_SECONDS)
    if os.path.exists(path):
        with open(path) as f:
            times = json.load(f)
        kept = {key: value for key, value in times.items() if int(key) < epoch}
        if not kept:
            os.remove(path)
        elif kept != times:
            write_json(path, kept)
    return epoch


def smoke_config(cfg, flag_values, sizes):
    """`cfg` shrunk for `--smoke`: each field of `sizes` takes its smoke value
    unless its flag was given on the command line (a given flag wins, as it
    wins over a preset), and the warm-up becomes shorter than the run."""
    sizes = {name: value for name, value in sizes.items() if not flag_values[name].present}
    if hasattr(cfg, "warmup_epochs") and not flag_values["warmup_epochs"].present:
        sizes["warmup_epochs"] = min(cfg.warmup_epochs, sizes.get("epochs", cfg.epochs) - 1)
    return dataclasses.replace(cfg, **sizes)


def begin_run(cfg, workdir):
    """The start every training binary shares; returns `(initial_epoch, strategy)`.

    The environment checks, the seeds (and TensorFlow op determinism with
    `--deterministic`), the folder, the epoch a backup resumes at
    (`start_run`: a killed run's partial outputs removed) and the
    distribution strategy. The binary then builds, fits and writes its
    outputs, and ends with `finish_run` once the last of them is written.
    """
    check_environment(cfg)
    check_resumed_config(cfg, workdir)
    set_determinism(cfg.seed, cfg.deterministic)
    os.makedirs(workdir, exist_ok=True)
    return start_run(workdir), make_strategy(cfg.strategy)


# What a resumed run may change: how it runs, evaluates and exports, and where its
# data lie; not what it trains.
RESUME_MAY_CHANGE = frozenset({
    "eval_every", "run_eagerly", "deterministic", "strategy", "export", "export_encoder",
    "mask_summary_every", "dataset", "data_dir", "download", "input"})


def check_resumed_config(cfg, workdir):
    """Refuses to resume `workdir`'s backup under another training config.

    A folder with a backup resumes it; with other flags (say `--lr`,
    `--method`, `--epochs`) the run would continue under a mix of two
    recipes, or fail later loading weights of another model. The
    ValueError names each field, the folder's value and this one, before
    anything in the folder changes. Fields of `RESUME_MAY_CHANGE` and fields
    an older config.json lacks are not compared.
    """
    from keras_amix.training.callbacks import backup_epoch

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path) or backup_epoch(os.path.join(workdir, BACKUP)) == 0:
        return
    with open(path) as f:
        saved = json.load(f)
    current = json.loads(json.dumps(dataclasses.asdict(cfg)))
    changed = [f"--{name}: {saved[name]!r} in the folder, {value!r} now"
               for name, value in current.items()
               if name in saved and name not in RESUME_MAY_CHANGE and saved[name] != value]
    if changed:
        raise ValueError(
            f"{workdir!r} holds a backup of a run with other settings ({'; '.join(changed)}): "
            "resume it with its own flags, or train into another `--workdir`.")


def pass_epochs(cfg, initial_epoch):
    """The `epochs` / `initial_epoch` of a training pipeline of `cfg` resumed
    at `initial_epoch` (see `keras_amix.data.pipeline`)."""
    # A complete backup (a kill while writing the final outputs) trains no
    # epoch, but `fit` still builds the model from one batch: hold the last.
    return dict(epochs=cfg.epochs, initial_epoch=min(initial_epoch, cfg.epochs - 1))


def read_history(workdir):
    """The whole run's per-epoch logs from history.csv: {name: [value per epoch]}
    (a resumed `fit` only returns the epochs it ran)."""
    import csv

    path = os.path.join(workdir, HISTORY)
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["epoch"]))
    epochs = [int(row["epoch"]) for row in rows]
    if epochs != list(range(len(rows))):
        raise ValueError(f"{path} must hold epochs 0..{len(rows) - 1} once each; "
                         f"it holds {epochs}.")
    names = [name for name in (rows[0] if rows else {}) if name != "epoch"]
    return {name: [float(row[name]) if row[name] not in ("", "NA") else float("nan")
                   for row in rows] for name in names}


def finish_run(workdir):
    """Drops the backup: call it once every final output is written."""
    import shutil

    shutil.rmtree(os.path.join(workdir, BACKUP), ignore_errors=True)


def set_determinism(seed, deterministic):
    """Seeds Python, NumPy and the backend; with `deterministic`, also makes
    TensorFlow's ops deterministic (same weights on a rerun, and on a resume
    at an epoch boundary). JAX on CPU is deterministic already."""
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def median_last(values, n=10):
    """The paper's report: the median of the last `n` epochs' values."""
    return statistics.median(values[-n:]) if values else float("nan")


def eval_epochs(epochs, every, initial_epoch=0, last=10):
    """The 1-indexed epochs a run evaluates (Keras' `validation_freq` list):
    every `every`-th, the first this process runs (so history.csv's columns,
    fixed by a process's first logged epoch, always hold the validation
    metrics) and the last `last` ones (what `median_last` reports)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"`eval_every` must be an int >= 1; received {every!r}.")
    wanted = set(range(every, epochs + 1, every)) | set(range(epochs - last + 1, epochs + 1))
    wanted.add(initial_epoch + 1)
    return sorted(e for e in wanted if initial_epoch < e <= epochs)
