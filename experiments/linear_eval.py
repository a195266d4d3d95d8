r"""Linear evaluation of a frozen self-supervised encoder (paper §4.2).

The encoder is frozen (BatchNorm in inference mode); a linear classifier is
trained on its global-pooled features with SGD (momentum 0.9, no weight
decay), batch 256, 100 epochs, lr 0.1 multiplied by 0.1 at 30 % and 60 % of
the epochs (epochs 30 and 60 of 100), and the test top-1 is reported.

`--encoder` takes:

* `encoder.keras` as written by `experiments/train_selfsup.py` (images ->
  pooled features), or any Keras model archive mapping NHWC images to
  features (rank 2, or rank 4 maps which are pooled);
* the whole `model.keras` of a keras-amix model (its backbone is used);
* a SavedModel folder written by `keras_amix.export.export_saved_model`
  (`serve_float32` endpoint: [0, 1] images -> features; it normalises the
  images itself). Needs the TensorFlow backend and `--trust_saved_model`:
  loading a SavedModel runs whatever graph it holds, while a `.keras` file
  loads in Keras' safe mode.

A file that is none of these, a classifier (a model ending in a Dense or
softmax head, or whose outputs are probabilities: rows >= 0 summing to 1,
e.g. linear_eval's own classifier.keras or train_supervised's export/), or an
encoder whose BatchNorm statistics were never updated (an untrained network),
is refused with a ValueError naming the file before any training.

`--augment=none` (default) computes the features once and trains the linear
layer on them, which is exact for a frozen encoder without augmentation and
fast on a CPU; `--augment=cifar|imagenet` runs the frozen encoder on
augmented images every epoch, as in the paper's protocol.

Outputs in `--workdir` (default runs/linear_eval): config.json, metrics.json
(final top-1, median of the last 10 epochs, per-epoch history) and, for a
Keras encoder, classifier.keras (encoder + linear layer).

Examples:

    python -m experiments.linear_eval --encoder=runs/selfsup/encoder.keras
    python -m experiments.linear_eval --preset=stl10 --encoder=runs/stl10/encoder.keras
    python -m experiments.linear_eval --preset=cpu_cifar10 --dataset=/data/cifar10-jpg \
        --encoder=runs/ssl_cifar10/mixup/encoder.keras
"""

import dataclasses
import os

from absl import app

from experiments import common


def _check_decay_at(name, value):
    try:
        fractions = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"`--{name}` must be fractions; received {value!r}.") from None
    if any(not 0.0 < f < 1.0 for f in fractions) or fractions != sorted(fractions):
        raise ValueError(
            f"`--{name}` must be increasing fractions in (0, 1); received {tuple(value)!r}."
        )


AUGMENTS = ("none", "cifar", "imagenet")


# Every field is a flag (`common.define_config_flags`); the fields shared by the
# binaries take their help and check from `common.SHARED_FLAGS` / `SHARED_CHECKS`.
@dataclasses.dataclass(frozen=True)
class Config:
    encoder: str = common.flag(None, "encoder.keras / model.keras of a keras-amix run, or a "
                               "SavedModel folder (needs --trust_saved_model).",
                               common.text(optional=True))  # required: validate() says so
    dataset: str = "digits"
    data_dir: str = None
    download: bool = False
    train_split: str = common.flag("train", "Labelled split the linear layer trains on.")
    test_split: str = "test"
    input: str = common.input_field()
    image_size: int = common.flag(None, "Image size (default: the encoder's input size).",
                                  common.number(1, integer=True, optional=True))
    augment: str = common.flag("none", "none (features computed once) | cifar | imagenet",
                               common.choice(AUGMENTS))
    epochs: int = common.flag(100, "Epochs of linear training.")
    batch_size: int = common.flag(256, "Batch size.")
    lr: float = common.flag(0.1, "Initial learning rate.")
    momentum: float = 0.9
    weight_decay: float = 0.0
    decay_at: tuple = common.flag((0.3, 0.6), "Fractions of the epochs where lr is multiplied "
                                  "by 0.1.", _check_decay_at, comma_list=True)
    per_class_limit: int = None
    test_per_class_limit: int = None
    max_train_examples: int = None
    max_test_examples: int = None
    seed: int = 0
    run_eagerly: bool = False
    trust_saved_model: bool = common.flag(
        False, "Allow a SavedModel folder as --encoder. Loading a SavedModel runs whatever "
        "TensorFlow graph it holds (arbitrary ops, file access), unlike a .keras file, which "
        "loads in Keras' safe mode: pass it only for folders you trust.")


PRESETS = {
    "demo": Config(),
    "stl10": Config(dataset="stl10", augment="imagenet"),
    "tiny_imagenet": Config(dataset="tiny_imagenet", test_split="val", augment="imagenet"),
    "imagenet": Config(dataset="imagenet2012", test_split="validation", augment="imagenet",
                       lr=30.0),
    # The labelled part of the CPU self-supervised budget, full test set.
    "cpu_cifar10": Config(per_class_limit=1000),
}

# The binary's own flags (`FLAGS`, its own absl FlagValues): --preset, one per
# Config field, --smoke, --workdir. Every flag's check runs when the flags are
# parsed and again on the resolved config (common.check_fields).
FLAGS, CHECKS, parse_flags = common.binary_flags(
    Config, PRESETS, workdir="runs/linear_eval",
    smoke="Tiny and fast: a few images per class, 2 epochs.", doc=__doc__)
CONFIG_FLAGS = [f.name for f in dataclasses.fields(Config)]


def resolve_config():
    """The config of the flags (preset, then the flags set, then --smoke),
    checked in plain Python: a ValueError names the bad flag."""
    cfg = common.resolve(PRESETS[FLAGS.preset], FLAGS, CONFIG_FLAGS)
    # Another data set's splits (its "val" for a missing "test"); the image size
    # is the encoder's.
    cfg, note = common.own_data_defaults(cfg, PRESETS[FLAGS.preset], FLAGS, fields=())
    if note:
        print(note, flush=True)
    _check_decay_at("decay_at", cfg.decay_at)
    cfg = dataclasses.replace(cfg, decay_at=tuple(float(v) for v in cfg.decay_at))
    if FLAGS.smoke:
        cfg = common.smoke_config(cfg, FLAGS, dict(
            epochs=2, batch_size=16, per_class_limit=8, test_per_class_limit=4,
            max_train_examples=None, max_test_examples=None))
    validate(cfg)
    return cfg


def validate(cfg):
    """Checks `cfg` in plain Python (no Keras is imported)."""
    if not cfg.encoder:
        raise ValueError("`--encoder` is required: an encoder .keras file or a SavedModel folder.")
    common.check_fields(cfg, CHECKS)
    common.check_data_flags(cfg)
    if os.path.isdir(cfg.encoder) and not cfg.trust_saved_model:
        raise ValueError(_UNTRUSTED.format(path=cfg.encoder))


_UNTRUSTED = ("`--encoder` {path!r} is a folder, read as a SavedModel: loading one runs the "
              "TensorFlow graph it holds. Pass --trust_saved_model if you trust it, or an "
              "encoder.keras file instead.")


# ------------------------------------------------------------------ encoders
@dataclasses.dataclass
class Encoder:
    """A frozen feature extractor: a Keras model from images to (B, d) features."""

    model: object  # keras.Model
    normalizes_inputs: bool  # True for a SavedModel: it takes [0, 1] images
    image_size: int = None


def _never_trained(model):
    import keras
    import numpy as np

    norms = [layer for layer in _all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return False
    for layer in norms:
        mean = np.asarray(layer.moving_mean)
        var = np.asarray(layer.moving_variance)
        if np.any(mean != 0.0) or np.any(var != 1.0):
            return False
    return True


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def load_encoder(path, trust_saved_model=False):
    """Loads `--encoder` as a frozen `Encoder`; ValueError if it is not a trained
    encoder (a classifier is refused). A SavedModel folder runs its own graph:
    it loads only with `trust_saved_model`."""
    import keras

    if not path or not os.path.exists(path):
        raise ValueError(f"`--encoder` does not exist: {path!r}.")
    if os.path.isdir(path):
        return _load_saved_model(path, trust_saved_model)
    if not path.endswith(".keras"):
        raise ValueError(
            f"`--encoder` must be a .keras file or a SavedModel folder; received {path!r}."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # a corrupt or foreign file: name it, keep the cause
        raise ValueError(f"`--encoder` {path!r} is not a loadable Keras model: {err}") from err
    if hasattr(model, "encoder") and callable(model.encoder):
        model = model.encoder()  # a whole MoCo v2 model
    elif hasattr(model, "backbone") and isinstance(model.backbone, keras.Model):
        model = _pooled(model.backbone)  # a keras-amix classifier: its backbone
    if not isinstance(model, keras.Model) or len(model.inputs or ()) != 1 \
            or len(model.outputs or ()) != 1:
        raise ValueError(
            f"`--encoder` {path!r} must map one image batch to one feature tensor; "
            f"received a {type(model).__name__}."
        )
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if len(in_shape) != 4:
        raise ValueError(
            f"`--encoder` {path!r} must take NHWC images; its input has shape {in_shape}."
        )
    if len(out_shape) == 4:
        model = _pooled(model)
    elif len(out_shape) != 2:
        raise ValueError(
            f"`--encoder` {path!r} must output (B, d) features or (B, H, W, d) maps; "
            f"its output has shape {out_shape}."
        )
    last = _output_layer(model)
    if isinstance(last, (keras.layers.Dense, keras.layers.Softmax)) or getattr(
            last, "activation", None) in (keras.activations.softmax, keras.activations.sigmoid):
        raise ValueError(
            f"`--encoder` {path!r} ends in a {type(last).__name__} layer {last.name!r}: a "
            "classifier head, not an encoder. Pass the encoder.keras a training run wrote."
        )
    _refuse_probabilities(model, path)
    if _never_trained(model):
        raise ValueError(
            f"`--encoder` {path!r} was never trained: every BatchNorm layer still holds its "
            "initial statistics (mean 0, variance 1)."
        )
    model.trainable = False
    size = in_shape[1] if in_shape[1] == in_shape[2] else None
    return Encoder(model=model, normalizes_inputs=False, image_size=size)


def _output_layer(model):
    """The layer that computes `model`'s output, looking inside nested models
    (linear_eval's own classifier.keras ends in a Sequential head)."""
    import keras

    layer = model
    while isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
        inner = layer.outputs[0]._keras_history.operation
        if inner is layer:
            break
        layer = inner
    return layer


def _refuse_probabilities(model, path, image_size=32):
    """ValueError if `model` maps images to class probabilities (rows >= 0
    summing to 1): a classifier, whatever its layers are called."""
    import keras
    import numpy as np

    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else (None,) * 3
    shape = tuple(image_size if d is None else d for d in shape[:2]) + (shape[2] or 3,)
    x = np.random.default_rng(0).uniform(size=(4,) + shape).astype("float32")
    try:
        y = keras.ops.convert_to_numpy(model(x, training=False))
    except Exception:  # e.g. a SavedModel for one fixed size: the protocol will tell
        return
    if y.ndim == 2 and y.shape[-1] > 1 and np.all(y >= 0) and \
            np.allclose(y.sum(-1), 1.0, atol=1e-3):
        raise ValueError(
            f"`--encoder` {path!r} outputs class probabilities (rows sum to 1): a "
            "classifier, not an encoder. Pass the encoder.keras or the embeddings "
            "SavedModel a self-supervised run wrote."
        )


def _pooled(model):
    import keras

    inputs = keras.Input(tuple(model.input_shape[1:]), name="images")
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(model(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_pooled")


def _load_saved_model(path, trust_saved_model):
    import keras

    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"`--encoder` folder {path!r} holds no saved_model.pb.")
    if not trust_saved_model:
        raise ValueError(_UNTRUSTED.format(path=path))
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "A SavedModel `--encoder` needs KERAS_BACKEND=tensorflow; the backend is "
            f"{keras.backend.backend()!r}. Pass the encoder.keras file instead."
        )
    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serve_float32")
    except Exception as err:
        raise ValueError(
            f"`--encoder` {path!r} has no `serve_float32` endpoint (write it with "
            f"keras_amix.export.export_saved_model): {err}"
        ) from err
    inputs = keras.Input((None, None, 3), name="images")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = outputs["output"]
    model = keras.Model(inputs, outputs, name="saved_model_encoder")
    _refuse_probabilities(model, path)  # e.g. train_supervised's export/
    model.trainable = False
    return Encoder(model=model, normalizes_inputs=True)


# ------------------------------------------------------------------- training
def _learning_rate(cfg, steps_per_epoch):
    import keras

    # PiecewiseConstantDecay keeps the old value *at* a boundary; the
    # optimizer's first step of epoch e has iterations == e * steps.
    boundaries = [max(1, int(round(f * cfg.epochs))) * steps_per_epoch - 1
                  for f in cfg.decay_at]
    values = [cfg.lr * 0.1 ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _head(feature_dim, num_classes):
    import keras

    return keras.Sequential([keras.Input((feature_dim,)),
                             keras.layers.Dense(num_classes, name="linear")], name="linear_head")


def _compile(model, cfg, steps_per_epoch):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(_learning_rate(cfg, steps_per_epoch),
                                       momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay or None),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")],
        run_eagerly=cfg.run_eagerly,
    )


def evaluate(cfg, workdir):
    """Runs the protocol for `cfg`; returns the metrics dict written to metrics.json."""
    import keras
    import numpy as np

    from keras_amix.training.callbacks import EpochTimer
    from keras_amix.training.callbacks import TerminateOnNonFinite

    numpy_input = common.input_kind(cfg) == "numpy"
    encoder = load_encoder(cfg.encoder, cfg.trust_saved_model)  # refuses a bad file first
    keras.utils.set_random_seed(cfg.seed)
    if numpy_input:
        from keras_amix.data import arrays

        splits, info = arrays.load_npz(cfg.dataset)
    else:
        from keras_amix import data as data_lib

        info = data_lib.info(cfg.dataset, data_dir=cfg.data_dir)
    image_size = cfg.image_size or encoder.image_size
    if image_size is None:
        raise ValueError("`--image_size` is required for an encoder without a fixed input size.")
    if encoder.image_size is not None and image_size != encoder.image_size:
        raise ValueError(
            f"`--image_size`={image_size} differs from the encoder's input size "
            f"{encoder.image_size}."
        )
    if numpy_input and cfg.augment == "imagenet":
        raise ValueError("`--input=numpy` supports --augment=none|cifar; received "
                         "--augment='imagenet' (use --input=tfdata).")
    os.makedirs(workdir, exist_ok=True)
    if numpy_input:  # (images, labels) arrays in memory
        train_raw = common.array_split(cfg, splits, cfg.train_split, "train_split",
                                       cfg.per_class_limit, cfg.max_train_examples)
        test_raw = common.array_split(cfg, splits, cfg.test_split, "test_split",
                                      cfg.test_per_class_limit, cfg.max_test_examples)
        n_train = len(train_raw[1])
    else:
        train_raw, n_train = common.load_split(cfg, info, cfg.train_split, cfg.per_class_limit,
                                               cfg.max_train_examples)
        test_raw, _ = common.load_split(cfg, info, cfg.test_split, cfg.test_per_class_limit,
                                        cfg.max_test_examples, count=False, flag="test_split")
    stats = (dict(mean=None, std=None) if encoder.normalizes_inputs
             else dict(mean=info.mean, std=info.std))
    steps = max(1, -(-n_train // cfg.batch_size))
    common.write_json(os.path.join(workdir, "config.json"),
                      dict(dataclasses.asdict(cfg), backend=keras.backend.backend(),
                           image_size=image_size, train_examples=n_train))

    def images(raw, training, augment):
        if numpy_input:
            return arrays.ArrayBatches(
                *raw, training=training, augment=augment, batch_size=cfg.batch_size,
                num_classes=info.num_classes, image_size=image_size, one_hot=False,
                seed=cfg.seed, epochs=cfg.epochs if training else 1, drop_remainder=False,
                **stats)
        return data_lib.pipeline(
            raw, training=training, augment=augment, batch_size=cfg.batch_size,
            num_classes=info.num_classes, image_size=image_size, one_hot=False,
            seed=cfg.seed, cache=True, drop_remainder=False, **stats)

    # Evaluation: with the ImageNet augmentation on photos larger than the encoder's
    # input, their centre crop (the official protocol), else a resize.
    test_augment = None if numpy_input else common.eval_augment(cfg.augment, info, image_size)
    timer = EpochTimer()
    callbacks = [TerminateOnNonFinite(), timer]  # a diverged run stops with an error
    if cfg.augment == "none":
        # Frozen encoder, no augmentation: the features never change; compute
        # them once and train the linear layer on the arrays.
        def features(raw):
            ds = images(raw, training=False, augment=None)  # cached, fixed order
            if numpy_input:
                return encoder.model.predict(ds, verbose=0), ds.labels
            feats = encoder.model.predict(ds.map(lambda x, y: x), verbose=0)
            return feats, np.concatenate([np.asarray(y) for _, y in ds])

        x_train, y_train = features(train_raw)
        x_test, y_test = features(test_raw)
        head = _head(x_train.shape[-1], info.num_classes)
        _compile(head, cfg, steps)
        history = head.fit(x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
                           validation_data=(x_test, y_test), shuffle=True, verbose=2,
                           callbacks=callbacks)
        top1 = float(head.evaluate(x_test, y_test, verbose=0, return_dict=True)["top1"])
        feature_dim = x_train.shape[-1]
    else:
        inputs = keras.Input(tuple(encoder.model.input_shape[1:]), name="images")
        feats = encoder.model(inputs, training=False)
        feature_dim = feats.shape[-1]
        head = _head(feature_dim, info.num_classes)
        model = keras.Model(inputs, head(feats), name="linear_eval")
        _compile(model, cfg, steps)
        test_ds = images(test_raw, training=False, augment=test_augment)
        # The pipeline shuffles; ArrayBatches holds every epoch's pass back to back.
        history = model.fit(images(train_raw, training=True, augment=cfg.augment),
                            epochs=cfg.epochs, steps_per_epoch=steps if numpy_input else None,
                            validation_data=test_ds, verbose=2, shuffle=False,
                            callbacks=callbacks)
        top1 = float(model.evaluate(test_ds, verbose=0, return_dict=True)["top1"])
    val_top1 = [float(v) for v in history.history.get("val_top1", [])]
    metrics = dict(
        top1=top1,
        median_last10_top1=float(common.median_last(val_top1)),
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        feature_dim=int(feature_dim),
        train_examples=n_train,
        encoder=cfg.encoder,
        dataset=cfg.dataset,
        seconds_per_epoch=timer.seconds,
    )
    if not encoder.normalizes_inputs:
        inputs = keras.Input(tuple(encoder.model.input_shape[1:]), name="images")
        classifier = keras.Model(inputs, head(encoder.model(inputs)), name="linear_classifier")
        common.save_keras_atomic(classifier, os.path.join(workdir, "classifier.keras"))
    common.write_json(os.path.join(workdir, "metrics.json"), metrics)
    print(f"linear top-1 {top1:.4f} (median of the last 10 epochs "
          f"{metrics['median_last10_top1']:.4f}); outputs in {workdir}")
    return metrics


def main(argv):
    with common.usage_errors():  # a bad flag: one usage line, no traceback
        common.no_arguments(argv)
        cfg = resolve_config()  # plain Python: Keras is not imported yet
    evaluate(cfg, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
