r"""Self-supervised MoCo v2 training with an instance-level mixup method.

`--method` picks the variant (paper Table 4 / 5 baselines):

    mocov2                      plain MoCo v2 (eq. 2)
    mixup | cutmix | saliencymix | fmix | resizemix
                                the cross-view pipeline: eq. 2 + the mixup infoNCE of eq. 4
    imix | unmix | mochi        i-Mix, Un-Mix, MoCHi
    inter_intra                 Inter-Intra (C): MixUp within an ODC cluster, CutMix across
    puzzlemix_c                 PuzzleMix (C): PuzzleMix in the cross-view pipeline, its
                                saliency from the ODC pseudo labels
    amix_i | amix_c             AMix-I / AMix-C: the cross-view mixup learned by a Mix
                                Block+ (keras_amix.models.AMixSSL); AMix-C trains it on
                                ODC pseudo labels (--num_clusters, default 200)

Labels are never read. Run with no flags, it trains on the embedded `digits`
data set; everything goes into `--workdir` (default `runs/selfsup`):

    config.json       the resolved configuration
    metrics.json      per-epoch losses and seconds per epoch
    tensorboard/      TensorBoard logs;  history.csv  the same as CSV
    backup/           BackupAndRestore state: a killed run resumes here
    model.keras       the whole MoCo v2 model (reloads and resumes with keras.saving.load_model)
    encoder.keras     the trained query encoder: images -> global-pooled backbone features,
                      what `experiments/linear_eval.py --encoder=...` reads
    export/           SavedModel: uint8/float images -> L2-normalised embeddings
                      (`--export_embedding=features` or `projection`)

Examples:

    python -m experiments.train_selfsup --method=mixup
    python -m experiments.train_selfsup --preset=cpu_cifar10 \
        --dataset=/data/cifar10-jpg --method=imix --epochs=60
    python -m experiments.train_selfsup --preset=stl10 --method=mocov2
    python -m experiments.linear_eval --encoder=runs/selfsup/encoder.keras
"""

import dataclasses
import os

from absl import app

from experiments import common

# The cross-view mixers and their default α (keras_amix/mixers/names.py); the
# self-supervised runs use the mixers' own α.
MIXERS = common.mixer_names()
CROSS_VIEW_METHODS = MIXERS["CROSS_VIEW"]
SSL_METHODS = ("imix", "unmix", "mochi", "inter_intra", "puzzlemix_c")
# AMix-I / AMix-C, the AMixSSL variant each one is, and the Mix Block loss names.
MIX_LOSS_NAMES = common.library_names("models/mix_loss_names.py")
AMIX_METHODS = {"amix_i": "instance", "amix_c": "cluster"}
METHODS = ("mocov2",) + CROSS_VIEW_METHODS + SSL_METHODS + tuple(AMIX_METHODS)
# The methods that read ODC clusters (sample ids, a k-means start).
CLUSTER_METHODS = ("amix_c", "inter_intra", "puzzlemix_c")
# i-Mix, Un-Mix, Inter-Intra and PuzzleMix (C) take α through `MoCoV2`'s mixer_kwargs
# (MoCHi has none);
# AMix-I/C use the paper's α = 2 (§4.3, Fig. 5).
DEFAULT_ALPHA = {**{name: MIXERS["DEFAULT_ALPHA"][name] for name in CROSS_VIEW_METHODS},
                 "imix": 1.0, "unmix": 1.0, "inter_intra": 2.0,
                 "puzzlemix_c": MIXERS["DEFAULT_ALPHA"]["puzzlemix"], "amix_i": 2.0, "amix_c": 2.0}


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "digits"
    data_dir: str = None
    download: bool = False
    train_split: str = common.flag("train", "Split to train on (labels unused).")
    input: str = common.input_field()
    image_size: int = common.flag(32, "View size (square).")
    backbone: str = "resnet18"
    width: int = 16
    stem: str = "cifar"
    method: str = common.flag("mocov2", "|".join(METHODS), common.choice(METHODS))
    alpha: float = None  # None: the method's default
    mix_weight: float = common.flag(1.0, "Weight of the mixup loss term.",
                                    common.number(0, low_open=True))
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.06
    weight_decay: float = 5e-4
    weight_decay_mode: str = "coupled"  # PyTorch's SGD, as MoCo v2 trains
    momentum: float = 0.9
    warmup_epochs: int = 0
    projection_dim: int = common.flag(128, "Output size of the projection MLP.",
                                      common.number(1, integer=True))
    hidden_dim: int = common.flag(2048, "Hidden size of the projection MLP.",
                                  common.number(1, integer=True))
    queue_size: int = common.flag(1024, "Number of queued keys (negatives).",
                                  common.number(1, integer=True))
    temperature: float = common.flag(0.2, "infoNCE temperature tau.",
                                     common.number(0, low_open=True))
    key_momentum: float = common.flag(0.99, "EMA momentum of the key encoder.",
                                      common.number(0, 1))
    per_class_limit: int = None
    max_train_examples: int = None
    seed: int = 0
    strategy: str = "default"
    export: bool = True
    deterministic: bool = False  # TF_ENABLE_ONEDNN_OPTS=0 and TF op determinism
    run_eagerly: bool = False
    export_embedding: str = common.flag(
        "features", "What the SavedModel serves, L2-normalised: pooled backbone features or the "
        "MoCo projection: features | projection.", common.choice(("features", "projection")))
    mix_loss: str = common.flag(
        None, "AMix-I/C: the Mix Block's loss, '+'-joined terms of "
        + ", ".join(MIX_LOSS_NAMES["MIX_LOSS_TERMS"]) + " (paper Tables 1, 7; default "
        "infonce+bce for amix_i, ce+bce for amix_c).", common.text(optional=True))
    num_clusters: int = common.flag(200, "AMix-C / Inter-Intra: number K of ODC clusters.",
                                    common.number(2, integer=True))
    bn_group: int = common.flag(
        None, "Images per BatchNorm group: MoCo's shuffling BN on one device (split BN, the key "
        "batch reordered across the groups). Default: the largest divisor of the batch up to "
        "32 (the official 8-GPU MoCo v2 normalises 256 / 8) and half the batch, at least 4; "
        "0: one BatchNorm over the (per-replica) batch.",
        common.number(0, integer=True, optional=True))


# MoCo v2 settings (DESIGN §6, §10): SGD 0.03 per 256 images, momentum 0.9,
# wd 1e-4, cosine, tau 0.2, m 0.999, queue 65536. The default is the CPU demo.
PRESETS = {
    "demo": Config(),
    "stl10": Config(dataset="stl10", train_split="unlabelled", image_size=96, stem="imagenet",
                    width=64, epochs=400, batch_size=256, lr=0.03, weight_decay=1e-4,
                    queue_size=65536, key_momentum=0.999),
    "tiny_imagenet": Config(dataset="tiny_imagenet", image_size=64, width=64, epochs=400,
                            batch_size=256, lr=0.03, weight_decay=1e-4, queue_size=65536,
                            key_momentum=0.999),
    # A CPU budget on the CIFAR-10 JPEG copy (pass --dataset=PATH): a short
    # run needs a faster key encoder (m 0.99) and a queue that refreshes.
    "cpu_cifar10": Config(image_size=32, width=16, epochs=30, batch_size=128, lr=0.06,
                          weight_decay=5e-4, queue_size=4096, key_momentum=0.99,
                          per_class_limit=1000),
}

# The binary's own flags (`FLAGS`, its own absl FlagValues): --preset, one per
# Config field, --smoke, --workdir. Every flag's check runs when the flags are
# parsed and again on the resolved config (common.check_fields); combinations
# are checked in validate().
FLAGS, CHECKS, parse_flags = common.binary_flags(
    Config, PRESETS, workdir="runs/selfsup",
    smoke="Tiny and fast: a few batches of small images, width 8.", doc=__doc__,
    workdir_help="Output folder (resumes if it holds a backup).")
CONFIG_FLAGS = [f.name for f in dataclasses.fields(Config)]


def resolve_config():
    """The config of the flags (preset, then the flags set, then --smoke),
    checked in plain Python: a ValueError names the bad flag."""
    cfg = common.resolve(PRESETS[FLAGS.preset], FLAGS, CONFIG_FLAGS)
    cfg, note = common.own_data_defaults(cfg, PRESETS[FLAGS.preset], FLAGS,
                                         ("image_size", "stem"))
    if note:
        print(note, flush=True)
    if cfg.method == "mocov2":
        common.refuse_unused(FLAGS, ["mix_weight"], "with --method=mocov2 (no mixup term)")
    if FLAGS.smoke:
        smoke = dict(epochs=min(cfg.epochs, 2), batch_size=8, per_class_limit=4,
                     max_train_examples=None, image_size=min(cfg.image_size, 16),
                     queue_size=32, hidden_dim=32, projection_dim=16, width=8,
                     stem="cifar")  # (the ImageNet stem would leave 1 x 1 maps at 16 px)
        if cfg.method in CLUSTER_METHODS:
            smoke["num_clusters"] = 4
        cfg = common.smoke_config(cfg, FLAGS, smoke)
    cfg = with_defaults(cfg)
    validate(cfg)
    return cfg


BN_GROUP_MAX, BN_GROUP_MIN = 32, 4


def default_bn_group(batch_size):
    """`--bn_group`'s default: the largest divisor of `batch_size` up to
    `BN_GROUP_MAX` and half the batch (two groups at least), 0 (one BatchNorm)
    when none is `BN_GROUP_MIN` or more: 256 -> 32, 100 -> 25, 8 -> 4, 6 -> 0."""
    for group in range(min(BN_GROUP_MAX, batch_size // 2), BN_GROUP_MIN - 1, -1):
        if batch_size % group == 0:
            return group
    return 0


def with_defaults(cfg):
    """`cfg` with the method's α and the BatchNorm group where they are unset."""
    if cfg.alpha is None and cfg.method in DEFAULT_ALPHA:
        cfg = dataclasses.replace(cfg, alpha=DEFAULT_ALPHA[cfg.method])
    if cfg.bn_group is None:
        cfg = dataclasses.replace(cfg, bn_group=default_bn_group(cfg.batch_size))
    return cfg


def validate(cfg):
    """Checks `cfg` in plain Python (no Keras is imported)."""
    common.check_fields(cfg, CHECKS)
    common.check_schedule(cfg)
    common.check_data_flags(cfg)
    if cfg.alpha is not None and cfg.method not in DEFAULT_ALPHA:
        raise ValueError(f"`--alpha` has no effect with --method={cfg.method}; "
                         f"received {cfg.alpha}.")
    if cfg.queue_size < cfg.batch_size:
        raise ValueError(
            f"`--queue_size` must be >= `--batch_size` ({cfg.batch_size}); "
            f"received {cfg.queue_size}."
        )
    if cfg.method not in CLUSTER_METHODS and cfg.num_clusters != Config.num_clusters:
        raise ValueError(f"`--num_clusters` applies to --method={'|'.join(CLUSTER_METHODS)} "
                         "(ODC); "
                         f"received --num_clusters={cfg.num_clusters} with "
                         f"--method={cfg.method}.")
    if cfg.method not in AMIX_METHODS:
        if cfg.mix_loss is not None:
            raise ValueError("`--mix_loss` applies to --method=amix_i|amix_c; received "
                             f"--mix_loss={cfg.mix_loss} with --method={cfg.method}.")
    else:
        variant = AMIX_METHODS[cfg.method]
        names = MIX_LOSS_NAMES
        names["parse_mix_loss"](cfg.mix_loss or names["DEFAULT_MIX_LOSS"][variant], variant,
                                num_classes=2)  # the "(L)" terms read the data set's labels
    if cfg.bn_group and cfg.batch_size % cfg.bn_group:
        raise ValueError(f"`--bn_group` must divide `--batch_size` ({cfg.batch_size}), or be 0 "
                         f"(one BatchNorm over the batch); received {cfg.bn_group}.")
    if cfg.method != "mocov2" and cfg.batch_size < 2:
        raise ValueError(
            f"`--batch_size` must be >= 2 with a mixup method ({cfg.method!r}); "
            f"received {cfg.batch_size}."
        )


def config_for(preset="demo", **changes):
    """The config `--preset=PRESET --name=value ...` resolves to, without flags
    (benchmarks build their models through it): the method's α and the
    BatchNorm group filled in, then checked."""
    cfg = dataclasses.replace(PRESETS[preset], **changes)
    cfg = with_defaults(cfg)
    validate(cfg)
    return cfg


def bn_splits(cfg):
    """The split-BN groups of one replica's batch (`--bn_group`); in the
    strategy's scope (MirroredStrategy: each replica's share of the batch;
    JAX DataParallel runs one global step)."""
    from keras_amix.training.backend import num_replicas

    if not cfg.bn_group:
        return 1
    replicas = num_replicas()
    if cfg.batch_size % (replicas * cfg.bn_group):
        raise ValueError(f"`--bn_group`={cfg.bn_group} must divide each replica's batch "
                         f"(--batch_size={cfg.batch_size} over {replicas} replicas).")
    return cfg.batch_size // (replicas * cfg.bn_group)


def build_model(cfg, num_samples=None, num_classes=None):
    """The model of `cfg`; AMix-C's ODC memory has `num_samples` rows, the
    "(L)" Mix Block losses read `num_classes` labels."""
    from keras_amix import models

    backbone = common.build_backbone(cfg.backbone, cfg.width, cfg.stem, cfg.image_size,
                                     bn_splits=bn_splits(cfg))
    moco = dict(projection_dim=cfg.projection_dim, hidden_dim=cfg.hidden_dim,
                queue_size=cfg.queue_size, temperature=cfg.temperature,
                momentum=cfg.key_momentum, mix_weight=cfg.mix_weight, seed=cfg.seed)
    if cfg.method in AMIX_METHODS:
        variant = AMIX_METHODS[cfg.method]
        terms = MIX_LOSS_NAMES["parse_mix_loss"](
            cfg.mix_loss or MIX_LOSS_NAMES["DEFAULT_MIX_LOSS"][variant], variant, 2)
        reads_labels = any(t in MIX_LOSS_NAMES["_NEEDS_CLASSES"] for t in terms)
        return models.AMixSSL(
            backbone, variant=variant, alpha=cfg.alpha, mix_loss=cfg.mix_loss,
            num_samples=num_samples if variant == "cluster" else None,
            num_clusters=cfg.num_clusters, num_classes=num_classes if reads_labels else None,
            **moco)
    mixer = None if cfg.method == "mocov2" else cfg.method
    mixer_kwargs = {}
    if cfg.method in DEFAULT_ALPHA:
        mixer_kwargs["alpha"] = cfg.alpha
    if cfg.method in CLUSTER_METHODS:
        moco.update(num_samples=num_samples, num_clusters=cfg.num_clusters)
    return models.MoCoV2(backbone, mixer=mixer, mixer_kwargs=mixer_kwargs, **moco)


def train_dataset(cfg, initial_epoch=0):
    """(two-view training pipeline of epochs initial_epoch..cfg.epochs - 1, each
    randomised by (cfg.seed, epoch), data set info, steps per epoch)."""
    if common.input_kind(cfg) == "numpy":
        return _array_train_dataset(cfg, initial_epoch)
    from keras_amix import data as data_lib

    info = data_lib.info(cfg.dataset, data_dir=cfg.data_dir)
    with_ids = cfg.method in CLUSTER_METHODS  # ODC keeps a memory row per sample id
    raw, n_train = common.load_split(cfg, info, cfg.train_split, cfg.per_class_limit,
                                     cfg.max_train_examples, with_ids=with_ids)
    steps = common.steps_per_epoch(cfg, n_train)
    ds = data_lib.two_view_pipeline(raw, batch_size=cfg.batch_size, image_size=cfg.image_size,
                                    mean=info.mean, std=info.std, seed=cfg.seed, cache=True,
                                    with_ids=with_ids, **common.pass_epochs(cfg, initial_epoch))
    first_pass = None
    if with_ids:  # the k-means start of ODC: every training image once, centre view
        first_pass = data_lib.pipeline(raw, batch_size=cfg.batch_size,
                                       num_classes=info.num_classes, training=False,
                                       image_size=cfg.image_size, mean=info.mean,
                                       std=info.std, one_hot=False)
    return ds, info, steps, n_train, first_pass


def _array_train_dataset(cfg, initial_epoch):
    """`train_dataset` from an .npz file in memory, without TensorFlow: the
    views of `keras_amix.data.TwoViewBatches`; ODC's first pass is the
    centre crop (the whole image resized, as `RandomResizedCrop` in inference)."""
    import numpy as np

    from keras_amix.data import arrays
    from keras_amix.data import crop

    splits, info = arrays.load_npz(cfg.dataset)
    images, labels = common.array_split(cfg, splits, cfg.train_split, "train_split",
                                        cfg.per_class_limit, cfg.max_train_examples)
    steps = common.steps_per_epoch(cfg, len(labels))
    with_ids = cfg.method in CLUSTER_METHODS
    ds = arrays.TwoViewBatches(images, labels, batch_size=cfg.batch_size,
                               num_classes=info.num_classes, image_size=cfg.image_size,
                               mean=info.mean, std=info.std, seed=cfg.seed, with_ids=with_ids,
                               **common.pass_epochs(cfg, initial_epoch))
    first_pass = None
    if with_ids:
        size, mean, std = cfg.image_size, np.float32(info.mean), np.float32(info.std)

        def centre_views():
            for start in range(0, len(images), cfg.batch_size):
                batch = images[start:start + cfg.batch_size].astype(np.float32) / 255.0
                boxes = crop.center_boxes(crop.NUMPY_OPS, len(batch), *batch.shape[1:3],
                                          (3.0 / 4.0, 4.0 / 3.0))
                views = crop.crop_and_resize(crop.NUMPY_OPS, batch, boxes, size, size)
                ids = np.arange(start, start + len(batch), dtype=np.int64)
                yield ({"images": ((views - mean) / std).astype(np.float32), "ids": ids},
                       labels[start:start + cfg.batch_size])

        first_pass = _Reiterable(centre_views)
    return ds, info, steps, len(labels), first_pass


class _Reiterable:
    """An iterable whose every `iter()` calls `make()` afresh (a generator function)."""

    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


def _draw_masks(cfg, workdir):
    """The paper's Fig. 4 for AMix-I/C: the Mix Block's masks on fixed test pairs
    (`masks.png` beside `model.keras`); returns the per-λ mask statistics."""
    from experiments import visualize_amix

    split = "test" if cfg.dataset in ("digits", "cifar10", "cifar100") or os.path.isdir(
        os.path.join(str(cfg.dataset), "test")) else cfg.train_split
    out, stats = visualize_amix.visualize(
        os.path.join(workdir, "model.keras"), dataset=cfg.dataset, data_dir=cfg.data_dir,
        split=split, out=os.path.join(workdir, "masks.png"))
    for lam, values in stats["lams"].items():
        print(f"masks at λ={lam}: mean {values['mask_mean']:.3f}, spatial std "
              f"{values['mask_spatial_std']:.3f}")
    print(f"mask picture: {out}")
    return stats["lams"]


def _odc_record(model, callback, workdir):
    """Cluster sizes per epoch (this process's epochs) and a plot of them with the
    label change ratio (`odc.png`); returns the sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    history = common.read_history(workdir)
    sizes = [entry["cluster_sizes"] for entry in callback.history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    if sizes:
        first = len(history.get("loss", [])) - len(sizes)  # a resumed run's first epoch
        epochs = np.arange(first, first + len(sizes)) + 1
        values = np.sort(np.asarray(sizes), axis=1)
        for q, style in ((0, ":"), (25, "--"), (50, "-"), (75, "--"), (100, ":")):
            left.plot(epochs, np.percentile(values, q, axis=1), style, color="C0",
                      label=f"{q}th pct" if q in (0, 50, 100) else None)
        left.legend(fontsize=7)
    left.set(xlabel="epoch", ylabel="cluster size", title="ODC cluster sizes")
    ratio = history.get("odc_change_ratio", [])
    right.plot(np.arange(1, len(ratio) + 1), ratio, color="C1")
    right.set(xlabel="epoch", ylabel="fraction relabelled", title="label change ratio")
    common.save_figure(fig, os.path.join(workdir, "odc.png"))
    print(f"ODC picture: {os.path.join(workdir, 'odc.png')}")
    final = np.asarray(model.odc.cluster_sizes())
    return dict(cluster_sizes_per_epoch=sizes, final_min=int(final.min()),
                final_max=int(final.max()))


class _FirstPass:
    """(images, ids) batches of the first-pass pipeline, re-iterable."""

    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        return ((batch["images"], batch["ids"]) for batch, _ in self.ds)


def train(cfg, workdir, extra_callbacks=()):
    """Trains `cfg` into `workdir`; returns the metrics dict written to metrics.json.

    Resumes from `workdir/backup` at the epoch it holds (the data pipeline
    too); the backup is dropped only once every output is written.
    """
    import keras

    from keras_amix.training.callbacks import EpochTimer

    initial_epoch, strategy = common.begin_run(cfg, workdir)
    train_ds, info, steps, n_train, first_pass = train_dataset(cfg, initial_epoch)
    with common.strategy_scope(strategy):
        model = build_model(cfg, num_samples=n_train, num_classes=info.num_classes)
        model.compile(optimizer=common.cosine_sgd(cfg, cfg.lr, steps), run_eagerly=cfg.run_eagerly)
    # After the model is built: a bad combination (e.g. K > the data set) fails first.
    common.write_json(
        os.path.join(workdir, "config.json"),
        dict(dataclasses.asdict(cfg), backend=keras.backend.backend(), steps_per_epoch=steps,
             mean=info.mean, std=info.std),
    )
    timer = EpochTimer(os.path.join(workdir, common.EPOCH_SECONDS))
    extra, odc = [], []
    # The masks in TensorBoard, each epoch (without TensorFlow: masks.png only).
    if cfg.method in AMIX_METHODS and common.tensorflow_available():
        from keras_amix.training.callbacks import MixImageSummary

        if common.input_kind(cfg) == "numpy":
            views = train_ds[0][0]["view1"][:8]
        else:
            views = common.first_images(train_ds.map(lambda x, y: (x["view1"], y)), 8)
        extra.append(MixImageSummary(os.path.join(workdir, "tensorboard", "masks"), views,
                                     mean=info.mean, std=info.std, seed=cfg.seed))
    if first_pass is not None:
        from keras_amix.models import ODCCallback
        from keras_amix.training.callbacks import InitializeClusters

        odc = [ODCCallback(model.odc)]
    # ODC first: its epoch-end cluster sizes reach the TensorBoard and CSV logs.
    callbacks = odc + common.run_callbacks(workdir, timer, *extra, *extra_callbacks)
    if first_pass is not None:
        # After the backup's restore (a resumed run keeps its clusters): k-means
        # on the first pass, if the memory is still empty.
        callbacks.append(InitializeClusters(_FirstPass(first_pass)))
    model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, initial_epoch=initial_epoch,
              callbacks=callbacks, verbose=2, shuffle=False)  # tf.data shuffles
    metrics = dict(
        history=common.read_history(workdir),  # every epoch, resumed runs included
        seconds_per_epoch=timer.run_seconds,  # every epoch, resumed processes included
        dataset=cfg.dataset,
        method=cfg.method,
        steps_per_epoch=steps,
    )
    common.save_keras_atomic(model, os.path.join(workdir, "model.keras"))
    encoder = model.encoder()
    common.save_keras_atomic(encoder, os.path.join(workdir, "encoder.keras"))
    if cfg.export:
        from keras_amix import export as export_lib

        served = encoder if cfg.export_embedding == "features" else model
        export_lib.export_saved_model(
            served, os.path.join(workdir, "export"), image_size=(cfg.image_size, cfg.image_size),
            mean=info.mean, std=info.std, output="embeddings", overwrite=True,
        )
    if cfg.method in AMIX_METHODS:
        metrics["masks"] = _draw_masks(cfg, workdir)
    if model.odc is not None:
        metrics["odc"] = _odc_record(model, odc[0], workdir)
    common.write_json(os.path.join(workdir, "metrics.json"), metrics)
    common.finish_run(workdir)
    last = metrics["history"].get("loss", [float("nan")])[-1]
    print(f"final loss {last:.4f}; encoder in {os.path.join(workdir, 'encoder.keras')}")
    return metrics


def main(argv):
    with common.usage_errors():  # a bad flag: one usage line, no traceback
        common.no_arguments(argv)
        if FLAGS.deterministic:  # (no preset sets it) read when TensorFlow loads, which
            os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # an image folder's size check does
        cfg = resolve_config()  # Keras is not imported yet, TensorFlow only for a folder
        common.check_environment(cfg)  # the input path; TensorFlow for --export
    train(cfg, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
