r"""Supervised training with a mixup method: vanilla, static mixers, AutoMix, AMix.

Run with no flags, it trains a ResNet-18 (width 16) on the embedded `digits`
data set (scikit-learn's real 8x8 digits, upsampled) and writes everything
into `runs/supervised`:

    config.json       the resolved configuration
    metrics.json      per-epoch history, final and median-of-last-10 top-1
    tensorboard/      TensorBoard logs
    backup/           BackupAndRestore state: a killed run resumes here
    model.keras       the trained model (reloads with keras.saving.load_model)
    export/           SavedModel: uint8/float images -> class probabilities

The backend comes from the environment: `KERAS_BACKEND=tensorflow` (default)
or `KERAS_BACKEND=jax`. `--strategy=mirrored` (TF) uses every local GPU;
`--strategy=data_parallel` (JAX) uses `keras.distribution.DataParallel`.

Examples:

    python -m experiments.train_supervised
    python -m experiments.train_supervised --dataset=/data/cifar10-jpg \
        --backbone=resnet18 --width=16 --method=mixup --epochs=100
    python -m experiments.train_supervised --preset=cifar100 --method=amix
"""

import dataclasses
import os

from absl import app

from experiments import common

# The registered mixers and their default α (keras_amix/mixers/names.py).
MIXERS = common.mixer_names()
STATIC_METHODS = tuple(MIXERS["DEFAULT_ALPHA"])
LEARNED_METHODS = ("automix", "amix")
METHODS = ("vanilla",) + STATIC_METHODS + LEARNED_METHODS


AUGMENTS = ("cifar", "imagenet", "none")
SETTINGS = ("paper", "official")
EXPORT_ENCODERS = ("online", "momentum")


def _check_switches(name, items):
    for item in items:
        _split_switch(item)


# Every field is a flag (`common.define_config_flags`); the fields shared by the
# binaries take their help and check from `common.SHARED_FLAGS` / `SHARED_CHECKS`.
@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "digits"
    data_dir: str = None
    download: bool = False
    train_split: str = "train"
    test_split: str = "test"
    input: str = common.input_field()
    image_size: int = common.flag(32, "Training image size (square).")
    augment: str = common.flag("cifar", "Augmentation preset: " + " | ".join(AUGMENTS) + ".",
                               common.choice(AUGMENTS))
    backbone: str = "resnet18"
    width: int = 16
    stem: str = "cifar"
    method: str = common.flag("vanilla", "|".join(METHODS), common.choice(METHODS))
    alpha: float = None  # None: the method's default
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    min_lr: float = None  # None: the method's default (LR_FLOOR)
    weight_decay: float = 1e-4
    weight_decay_mode: str = "coupled"  # PyTorch's SGD, as the paper trains
    momentum: float = 0.9
    warmup_epochs: int = 1
    per_class_limit: int = None
    test_per_class_limit: int = None
    max_train_examples: int = None
    max_test_examples: int = None
    eval_every: int = common.flag(
        1, "Evaluate on the test split after every N-th epoch; the first epoch a process "
        "runs and the last 10 (the paper's median) are always evaluated (history.csv: NA "
        "on the others). Training is the same for every N.", common.number(1, integer=True))
    seed: int = 0
    strategy: str = "default"
    export: bool = True
    deterministic: bool = False  # TF_ENABLE_ONEDNN_OPTS=0 and TF op determinism
    run_eagerly: bool = False
    # AutoMix / AMix (DESIGN §5): l = 3, beta = 0.1, eps = 0.1 live in the
    # Mix Block presets; `settings` picks the paper's or the official code's.
    export_encoder: str = common.flag("online", "AutoMix/AMix: which encoder the SavedModel "
                                      "serves: online | momentum.",
                                      common.choice(EXPORT_ENCODERS))
    settings: str = common.flag(
        "paper", "AutoMix/AMix: the paper's Mix Block or the official code's CIFAR one "
        "(MixBlock presets automix_official / amix_official: lam margin 0.08, PyTorch "
        "BatchNorm; SAMix: ELU, no dropout, gamma=1 with lam rescaling k=0.25, value convs "
        "without bias, batch-centred variance, lam adjusting p=0.25; AutoMix: no lam input) "
        "and momentum to 0.999999: paper | official.", common.choice(SETTINGS))
    mix_loss: str = common.flag("ce", "Mix Block loss: " + " | ".join(common.MIX_LOSSES),
                                common.choice(common.MIX_LOSSES))
    feature_stage: str = common.flag("stage3", "Backbone stage read by the Mix Block: "
                                     + " | ".join(common.FEATURE_STAGES),
                                     common.choice(common.FEATURE_STAGES))
    momentum_base: float = common.flag(0.999, "EMA momentum at the start.", common.number(0, 1))
    momentum_final: float = common.flag(
        None, "EMA momentum at the end (cosine); unset: 1.0 (paper) or 0.999999 (official).",
        common.number(0, 1, optional=True))
    momentum_horizon: float = common.flag(
        None, "AutoMix/AMix: largest EMA horizon 1/(1-m) of the momentum encoder as a "
        "fraction of the training steps; lowers the starting momentum of short runs (the "
        "paper's budgets are unchanged). 0: the schedule as written. Unset: 0.02 for AMix, "
        "0 for AutoMix (whose masks saturate with it and one head, BUILD_NOTES 2026-12-03).",
        common.number(0, 1, optional=True))
    # The official code's two heads and full momentum forward: off by default until the
    # TF step with them is bit-reproducible under load (BUILD_NOTES 2026-12-02).
    separate_mix_head: bool = common.flag(
        False, "AutoMix/AMix: a clean head and a mix head, each with its EMA copy, the Mix "
        "Block trained through the EMA mix head (official code); false: one head.")
    momentum_full_forward: bool = common.flag(
        False, "AutoMix/AMix: the momentum encoder's whole forward runs on the clean batch "
        "each step (official code); false: only up to --feature_stage.")
    phi_lam_adjust: bool = common.flag(
        False, "AutoMix/AMix: lambda adjusting on the Mix Block's own mask too (with its "
        "gradient), so its mixup loss sees a mask of mean lambda (a package option, not in "
        "the paper; BUILD_NOTES 2026-12-07).")
    phi_lr: float = common.flag(None, "Separate learning rate of the Mix Block (cosine); "
                                "unset: the encoder's optimizer.",
                                common.number(0, low_open=True, optional=True))
    phi_min_lr: float = common.flag(None, "Floor of the Mix Block's cosine (unset: "
                                    "phi_lr * min_lr / lr).", common.number(0, optional=True))
    mix_block: tuple = common.flag(
        (), "Mix Block switch override 'name=value'; repeatable, e.g. "
        "--mix_block=attention=cross --mix_block=content=linear (one Table-8 ablation row "
        "per switch).", _check_switches)
    mask_summary_every: int = common.flag(
        1, "AutoMix/AMix: write Mix Block mask pictures (paper Fig. 4) of 8 test images to "
        "workdir/tensorboard/masks every N epochs; 0 disables.", common.number(0, integer=True))


# What every paper preset shares: ResNet-18 at width 64; for AutoMix / AMix the
# official two heads and momentum forward (their resume is exact up to TF's
# run-to-run rounding under load, BUILD_NOTES 2026-12-02, as GPU runs are anyway).
_PAPER = dict(width=64, separate_mix_head=True, momentum_full_forward=True)

# The paper's settings (DESIGN §10); the default config is the CPU demo.
PRESETS = {
    # digits (8x8, upsampled to 16x16): lr 0.05 with one warm-up epoch is stable;
    # batch 32 and 25 epochs give AMix's Mix Block the ~700 steps it needs to leave
    # its flat start (BUILD_NOTES 2026-12-02) within about 5 minutes on 2 cores.
    "demo": Config(image_size=16, batch_size=32, epochs=25),
    "cifar100": Config(dataset="cifar100", image_size=32, augment="cifar", epochs=800,
                       batch_size=100, lr=0.1, weight_decay=1e-4, warmup_epochs=0, **_PAPER),
    "cifar10": Config(dataset="cifar10", image_size=32, augment="cifar", epochs=800,
                      batch_size=100, lr=0.1, weight_decay=1e-4, warmup_epochs=0, **_PAPER),
    "tiny_imagenet": Config(dataset="tiny_imagenet", test_split="val", image_size=64,
                            augment="imagenet", epochs=400, batch_size=100, lr=0.2,
                            weight_decay=1e-4, warmup_epochs=0, **_PAPER),
    "imagenet": Config(dataset="imagenet2012", test_split="validation", image_size=224,
                       augment="imagenet", stem="imagenet", epochs=300, batch_size=200,
                       lr=0.1, weight_decay=1e-4, warmup_epochs=0, **_PAPER),
    "fine_grained": Config(dataset="caltech_birds2011", image_size=224, augment="imagenet",
                           stem="imagenet", epochs=200, batch_size=16, lr=0.001,
                           weight_decay=5e-4, warmup_epochs=0, **_PAPER),
    # DESIGN §12: the calibrated CPU budget on the CIFAR-10 JPEG copy, with the
    # paper's CIFAR optimiser (coupled weight decay 1e-4).
    "cpu_cifar10": Config(image_size=32, augment="cifar", width=16, epochs=100,
                          batch_size=100, lr=0.1, weight_decay=1e-4, per_class_limit=500,
                          warmup_epochs=0),
}
# The learning-rate floor of each method. The official code's static-mixup
# configs decay to 0; its AutoMix / SAMix configs end the cosine at 0.05 from
# 0.1 (CIFAR), so the Mix Block keeps learning to the end: half the peak.
# The Tiny-ImageNet, ImageNet and CUB-200 SAMix configs give the Mix Block its own
# cosine: encoder 0.2 -> 0.05 and Mix Block 0.1 -> 1e-3 (Tiny); encoder 0.1 -> 0
# and 0.1 -> 1e-3 (ImageNet); encoder 0.001 -> 0 and 0.01 -> 5e-4 (CUB).
LEARNED_LR_FLOOR = 0.5
LEARNED_PRESET_LR = {"tiny_imagenet": dict(min_lr=0.05, phi_lr=0.1, phi_min_lr=1e-3),
                     "imagenet": dict(min_lr=0.0, phi_lr=0.1, phi_min_lr=1e-3),
                     "fine_grained": dict(min_lr=0.0, phi_lr=0.01, phi_min_lr=5e-4)}
# Default mixing strength per method: each mixer's `default_alpha`, and the
# AutoMix / AMix α of the paper (an `AMixClassifier` argument, not a mixer).
DEFAULT_ALPHA = {**MIXERS["DEFAULT_ALPHA"], "automix": 2.0, "amix": 2.0}
# Where the grid search of a larger data set picks another α (OpenMixup's benchmark
# tables, docs/en/mixup_benchmarks/Mixup_imagenet.md: Tiny-ImageNet ResNet-18, and
# ImageNet-1k 300 epochs in the PyTorch-style setting).
PRESET_ALPHA = {
    "tiny_imagenet": {"cutmix": 1.0, "saliencymix": 1.0, "fmix": 1.0, "manifoldmix": 0.2},
    "imagenet": {"mixup": 0.2, "cutmix": 1.0, "saliencymix": 1.0, "fmix": 1.0,
                 "manifoldmix": 0.2},
}
# The short-run momentum rule per learned method (`--momentum_horizon` unset): AMix
# needs it on the demo budget (BUILD_NOTES 2026-12-02); with it and one head AutoMix's
# masks saturate to one image on the 5k x 100 budget (not with the paper's momentum,
# nor with the official two heads: 2026-12-03).
MOMENTUM_HORIZON = {"amix": 0.02, "automix": 0.0}


def method_defaults(cfg, preset=None):
    """`cfg` with the method's α (the preset's, `PRESET_ALPHA`, where it has
    one) and momentum rule where they are unset (None)."""
    if cfg.alpha is None and cfg.method in DEFAULT_ALPHA:
        alpha = PRESET_ALPHA.get(preset, {}).get(cfg.method, DEFAULT_ALPHA[cfg.method])
        cfg = dataclasses.replace(cfg, alpha=alpha)
    if cfg.momentum_horizon is None and cfg.method in MOMENTUM_HORIZON:
        cfg = dataclasses.replace(cfg, momentum_horizon=MOMENTUM_HORIZON[cfg.method])
    return cfg

# The binary's own flags (`FLAGS`, its own absl FlagValues): --preset, one per
# Config field, --smoke, --workdir. Every flag's check runs when the flags are
# parsed and again on the resolved config (common.check_fields); combinations
# are checked in validate().
FLAGS, CHECKS, parse_flags = common.binary_flags(
    Config, PRESETS, workdir="runs/supervised",
    smoke="Tiny and fast: a few batches of small images, width 8.", doc=__doc__,
    workdir_help="Output folder (resumes if it holds a backup).")
CONFIG_FLAGS = [f.name for f in dataclasses.fields(Config)]
# Flags only AutoMix / AMix read.
LEARNED_FLAGS = ("export_encoder", "settings", "mix_loss", "feature_stage", "momentum_base",
                 "momentum_final", "momentum_horizon", "separate_mix_head",
                 "momentum_full_forward", "phi_lam_adjust", "phi_lr", "phi_min_lr", "mix_block",
                 "mask_summary_every")


def resolve_config():
    """The config of the flags (preset, then the flags set, then --smoke),
    checked in plain Python: a ValueError names the bad flag."""
    cfg = common.resolve(PRESETS[FLAGS.preset], FLAGS, CONFIG_FLAGS)
    cfg = dataclasses.replace(cfg, mix_block=tuple(cfg.mix_block))
    cfg, note = common.own_data_defaults(cfg, PRESETS[FLAGS.preset], FLAGS)
    if note:
        print(note, flush=True)
    if cfg.method not in LEARNED_METHODS:
        common.refuse_unused(FLAGS, LEARNED_FLAGS, f"with --method={cfg.method} "
                             f"(only with {'|'.join(LEARNED_METHODS)})")
    if FLAGS.smoke:
        # A class-balanced handful: 8 training and 4 test images per class.
        cfg = common.smoke_config(cfg, FLAGS, dict(
            epochs=min(cfg.epochs, 2), batch_size=8, per_class_limit=8, test_per_class_limit=4,
            max_train_examples=None, max_test_examples=None, image_size=min(cfg.image_size, 16),
            width=8, stem="cifar"))  # (the ImageNet stem would leave 1 x 1 maps at 16 px)
    cfg = method_defaults(cfg, FLAGS.preset)
    cfg = learning_rates(cfg, FLAGS.preset, {name for name in CONFIG_FLAGS
                                             if FLAGS[name].present})
    validate(cfg)
    return cfg


def config_for(preset="demo", **changes):
    """The config `--preset=PRESET --name=value ...` resolves to, without flags
    (benchmarks build their models through it): the method's α and
    learning-rate floors filled in, then checked."""
    cfg = dataclasses.replace(PRESETS[preset], **changes)
    cfg = method_defaults(cfg, preset)
    cfg = learning_rates(cfg, preset, set(changes))
    validate(cfg)
    return cfg


def learning_rates(cfg, preset=None, given=()):
    """`cfg` with the method's learning-rate floors where they are unset (None).

    With `preset`, also that preset's AutoMix / AMix rates
    (`LEARNED_PRESET_LR`) for the fields not in `given` (those set by hand).
    """
    updates = {}
    if cfg.method in LEARNED_METHODS and preset is not None:
        for name, value in LEARNED_PRESET_LR.get(preset, {}).items():
            if name not in given:
                updates[name] = value
    cfg = dataclasses.replace(cfg, **updates)
    if cfg.min_lr is None:
        floor = LEARNED_LR_FLOOR * cfg.lr if cfg.method in LEARNED_METHODS else 0.0
        cfg = dataclasses.replace(cfg, min_lr=floor)
    if cfg.phi_lr is not None and cfg.phi_min_lr is None:
        cfg = dataclasses.replace(cfg, phi_min_lr=cfg.phi_lr * cfg.min_lr / cfg.lr)
    return cfg


def validate(cfg):
    """Checks `cfg` in plain Python (no Keras); the Mix Block switch values are
    checked by `mix_block_switches`, which builds a MixBlock."""
    common.check_fields(cfg, CHECKS)
    common.check_schedule(cfg)
    common.check_data_flags(cfg)
    if cfg.alpha is not None and cfg.method == "vanilla":
        raise ValueError(f"`--alpha` has no effect with --method=vanilla; received {cfg.alpha}.")
    if cfg.phi_min_lr is not None and cfg.phi_lr is not None and cfg.phi_min_lr > cfg.phi_lr:
        raise ValueError(f"`--phi_min_lr` must be <= `--phi_lr` ({cfg.phi_lr}); "
                         f"received {cfg.phi_min_lr}.")
    if cfg.method not in LEARNED_METHODS:
        for name in ("phi_lr", "phi_min_lr", "momentum_final"):
            if getattr(cfg, name) is not None:
                raise ValueError(f"`--{name}` applies to --method=automix|amix; received "
                                 f"method {cfg.method!r}.")
        if cfg.mix_block:
            raise ValueError(f"`--mix_block` applies to --method=automix|amix; received "
                             f"method {cfg.method!r}.")
    else:
        stride = common.STAGE_STRIDES[cfg.stem][cfg.feature_stage]
        if cfg.image_size % stride:
            raise ValueError(
                f"`--image_size` must be a multiple of {stride}, the stride of "
                f"--feature_stage={cfg.feature_stage} with --stem={cfg.stem}; "
                f"received {cfg.image_size}."
            )
    if cfg.method != "vanilla" and cfg.batch_size < 2:
        raise ValueError(
            f"`--batch_size` must be >= 2 with a mixup method ({cfg.method!r}); "
            f"received {cfg.batch_size}."
        )


def mix_block_preset(cfg):
    """The Mix Block preset of a config: the paper's ("automix" | "amix") or,
    with --settings=official, the official code's CIFAR one (DESIGN §4)."""
    return cfg.method + ("_official" if cfg.settings == "official" else "")


def _parse_value(text, choices=None):
    """A --mix_block value: a choice switch keeps its text (``lam_encoding=none`` is the
    choice "none"); otherwise int, float, true/false, none, else the string."""
    if choices is not None:
        return text.strip()
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split_switch(item):
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ValueError(f"`--mix_block` takes 'switch=value'; received {item!r}.")
    return name, value


def mix_block_switches(cfg):
    """The --mix_block overrides of a config, checked against the Mix Block."""
    from keras_amix.layers.mix_block import CHOICES, SWITCHES

    switches = {}
    for item in cfg.mix_block:
        name, sep, value = item.partition("=")
        if not sep or name not in SWITCHES:
            raise ValueError(
                f"`--mix_block` takes 'switch=value' with a switch in {sorted(SWITCHES)}; "
                f"received {item!r}."
            )
        switches[name] = _parse_value(value, CHOICES.get(name))
    if switches and cfg.method not in LEARNED_METHODS:
        raise ValueError(
            f"`--mix_block` applies to --method=automix|amix; received method {cfg.method!r}."
        )
    if cfg.method in LEARNED_METHODS:
        from keras_amix.layers import MixBlock

        try:
            MixBlock.from_preset(mix_block_preset(cfg), **switches)  # raises on a bad value
        except ValueError as err:
            raise ValueError(f"`--mix_block`: {err}") from None
    return switches


def build_model(cfg, num_classes, total_steps=None):
    from keras_amix import models
    from keras_amix.training.schedules import MomentumSchedule

    cfg = method_defaults(cfg)
    backbone = common.build_backbone(cfg.backbone, cfg.width, cfg.stem, cfg.image_size)
    if cfg.method == "vanilla":
        return models.MixupClassifier(backbone, num_classes)
    if cfg.method in LEARNED_METHODS:
        final = cfg.momentum_final
        if final is None:
            final = 0.999999 if cfg.settings == "official" else 1.0
        return models.AMixClassifier(
            backbone, num_classes, mix_block=mix_block_preset(cfg),
            mix_block_kwargs=mix_block_switches(cfg), alpha=cfg.alpha,
            feature_stage=cfg.feature_stage, mix_loss=cfg.mix_loss,
            momentum_schedule=MomentumSchedule(
                base=cfg.momentum_base, final=final,
                horizon_fraction=cfg.momentum_horizon or None),
            total_steps=total_steps, separate_mix_head=cfg.separate_mix_head,
            momentum_full_forward=cfg.momentum_full_forward,
            phi_lam_adjust=cfg.phi_lam_adjust, seed=cfg.seed,
        )
    return models.MixupClassifier(
        backbone, num_classes, mixer=cfg.method,
        mixer_kwargs=dict(alpha=cfg.alpha, seed=cfg.seed),
    )


def make_optimizer(cfg, steps_per_epoch):
    import keras

    cfg = learning_rates(cfg)
    theta = common.cosine_sgd(cfg, cfg.lr, steps_per_epoch, min_lr=cfg.min_lr)
    if cfg.phi_lr is None or cfg.method not in LEARNED_METHODS:
        return theta
    # θ and φ get their own SGD (Tiny-ImageNet: φ 0.1 -> 1e-3 with its own cosine).
    phi = common.cosine_sgd(cfg, cfg.phi_lr, steps_per_epoch, min_lr=cfg.phi_min_lr)
    optimizer_map = keras.optimizers.OptimizerMap(
        default_optimizer=theta, optimizer_map={".*mix_block.*": phi}
    )
    return keras.optimizers.MultiOptimizer(optimizer_map)


def train(cfg, workdir, extra_callbacks=()):
    """Trains `cfg` into `workdir`; returns the metrics dict written to metrics.json.

    Resumes from `workdir/backup` at the epoch it holds (the data pipeline
    too: epoch e sees the same order and augmentations as in an uninterrupted
    run); the backup is dropped only once every output is written.
    """
    import keras

    from keras_amix.training.callbacks import EpochTimer

    cfg = learning_rates(method_defaults(cfg))
    initial_epoch, strategy = common.begin_run(cfg, workdir)
    train_ds, test_ds, info, steps = common.datasets(cfg, initial_epoch=initial_epoch)
    common.write_json(
        os.path.join(workdir, "config.json"),
        dict(dataclasses.asdict(cfg), backend=keras.backend.backend(),
             num_classes=info.num_classes, steps_per_epoch=steps),
    )
    with common.strategy_scope(strategy):
        model = build_model(cfg, info.num_classes, total_steps=cfg.epochs * steps)
        model.compile(optimizer=make_optimizer(cfg, steps), run_eagerly=cfg.run_eagerly)
    timer = EpochTimer(os.path.join(workdir, common.EPOCH_SECONDS))
    extra = [timer]
    # A TensorBoard summary: without TensorFlow there is none (masks.png is drawn at the end).
    if (cfg.method in LEARNED_METHODS and cfg.mask_summary_every > 0
            and common.tensorflow_available()):
        from keras_amix.training.callbacks import MixImageSummary

        from experiments import visualize_amix

        # Normalised, as the model sees them; drawn as masks.png draws its pairs (from
        # every class of a split grouped by class, where the first 8 are one class).
        mask_images, _ = visualize_amix.load_images(cfg.dataset, cfg.test_split, cfg.data_dir,
                                                    cfg.image_size, 8, cfg.seed, at_most=True)
        extra.append(MixImageSummary(
            os.path.join(workdir, "tensorboard", "masks"), mask_images, mean=info.mean,
            std=info.std, seed=cfg.seed, every_n_epochs=cfg.mask_summary_every))
    model.fit(
        train_ds, validation_data=test_ds, epochs=cfg.epochs, steps_per_epoch=steps,
        initial_epoch=initial_epoch,
        validation_freq=common.eval_epochs(cfg.epochs, cfg.eval_every, initial_epoch),
        callbacks=common.run_callbacks(
            workdir, *extra, *extra_callbacks),
        verbose=2, shuffle=False,  # the input pipeline shuffles each pass
    )
    results = model.evaluate(test_ds, return_dict=True, verbose=0)
    history = common.read_history(workdir)  # every epoch, resumed runs included
    metrics = dict(
        final_top1=float(results["top1"]),
        median_last10_top1=float(common.median_last(history.get("val_top1", []))),
        history=history,
        seconds_per_epoch=timer.run_seconds,  # training time of every epoch, resumed ones too
        dataset=cfg.dataset,
        method=cfg.method,
    )
    if "top1_momentum" in results:  # AutoMix / AMix: the momentum encoder too
        metrics.update(
            final_top1_momentum=float(results["top1_momentum"]),
            median_last10_top1_momentum=float(
                common.median_last(history.get("val_top1_momentum", []))),
        )
    common.save_keras_atomic(model, os.path.join(workdir, "model.keras"))
    if cfg.method in LEARNED_METHODS:
        # The paper's Fig. 4 for this run: masks and mixed images of test pairs.
        from experiments import visualize_amix

        out, stats = visualize_amix.visualize(
            os.path.join(workdir, "model.keras"), dataset=cfg.dataset, data_dir=cfg.data_dir,
            split=cfg.test_split, image_size=cfg.image_size, seed=cfg.seed,
            out=os.path.join(workdir, "masks.png"))
        metrics["mask_picture"] = dict(path=out, **stats)
    if cfg.export:
        from keras_amix import export as export_lib

        served = model
        if cfg.method in LEARNED_METHODS:
            served = model.classifier(cfg.export_encoder)
        export_lib.export_saved_model(
            served, os.path.join(workdir, "export"), image_size=(cfg.image_size, cfg.image_size),
            mean=info.mean, std=info.std, overwrite=True,
        )
    common.write_json(os.path.join(workdir, "metrics.json"), metrics)
    common.finish_run(workdir)
    print(f"test top-1 {metrics['final_top1']:.4f} (median of the last 10 epochs "
          f"{metrics['median_last10_top1']:.4f}); outputs in {workdir}")
    if "final_top1_momentum" in metrics:
        print(f"momentum encoder: test top-1 {metrics['final_top1_momentum']:.4f} (median of "
              f"the last 10 epochs {metrics['median_last10_top1_momentum']:.4f})")
    if "mask_picture" in metrics:
        lams = metrics["mask_picture"]["lams"]
        print("Mix Block masks (mean / spatial std): " + ", ".join(
            f"λ={lam} {v['mask_mean']:.2f} / {v['mask_spatial_std']:.3f}"
            for lam, v in lams.items()))
        print(f"mask picture (paper Fig. 4): {metrics['mask_picture']['path']}")
    return metrics


def main(argv):
    with common.usage_errors():  # a bad flag: one usage line, no traceback
        common.no_arguments(argv)
        if FLAGS.deterministic:  # (no preset sets it) read when TensorFlow loads, which
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # an image folder's size check does
        cfg = resolve_config()  # Keras is not imported yet, TensorFlow only for a folder
        if cfg.method in LEARNED_METHODS:
            mix_block_switches(cfg)  # imports Keras: builds a MixBlock to check the switches
        common.check_environment(cfg)
    train(cfg, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
