r"""Pictures of the masks a trained AutoMix / AMix Mix Block predicts (paper Fig. 4).

Loads an `AMixClassifier` checkpoint (`model.keras` of
`experiments/train_supervised.py --method=amix|automix`) or an `AMixSSL` one
(`experiments/train_selfsup.py --method=amix_i|amix_c`), takes `--pairs`
validation images, pairs each with another one (a fixed permutation without
fixed points drawn from `--seed`: the same pairs for every checkpoint) and,
with the momentum (key) encoder's stage features and the Mix Block in
inference mode, draws one row per pair:

    x_a | x_b | mask s_λ (grey, white = x_a) | mixed image | ... for each λ

The column titles give λ and the mask mean over the shown pairs; each mask
tile is labelled with its own mean and spatial standard deviation (a
constant mask, the known trivial solution, has std 0).

The dataset defaults to the one named in `config.json` beside the checkpoint
(else `digits`); the image size to the backbone's input size.

Examples:

    python -m experiments.visualize_amix --checkpoint=runs/supervised/model.keras
    python -m experiments.visualize_amix --checkpoint=/tmp/run/model.keras \
        --pairs=8 --lams=0.2,0.5,0.8 --out=/tmp/masks.png
"""

import json
import os

from absl import app
from absl import flags

from experiments import common

# The binary's own flags (not absl's global FLAGS), so that the binaries,
# which share flag names, import into one process.
FLAGS = flags.FlagValues()
flags.DEFINE_string("checkpoint", None, "A .keras file holding an AMixClassifier.",
                    flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "Data set name or path (default: the checkpoint's "
                    "config.json, else 'digits').", flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Folder holding the data set.", flag_values=FLAGS)
flags.DEFINE_string("split", "test", "Split the images come from.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Image size (default: the backbone's input size, "
                     "else the data set's native size).", flag_values=FLAGS)
flags.DEFINE_integer("pairs", 6, "Number of pairs (rows).", flag_values=FLAGS)
flags.DEFINE_list("lams", ["0.3", "0.5", "0.7"], "λ values, comma-separated, in [0, 1].",
                  flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the image choice and the pairing.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "PNG path (default: amix_masks.png beside the checkpoint).",
                    flag_values=FLAGS)
flags.DEFINE_bool("stretch_masks", False, "Show each mask tile contrast-stretched to its own "
                  "min..max (reveals the layout of near-constant masks); default: grey in [0, 1].",
                  flag_values=FLAGS)

# Images drawn from before choosing `pairs` of them with `seed`.
POOL_SIZE = 256


def load_amix(checkpoint):
    """Loads `checkpoint` and checks it is an AMixClassifier."""
    import keras

    from keras_amix import models

    if not checkpoint or not os.path.isfile(checkpoint):
        raise ValueError(
            f"`--checkpoint` must be an existing .keras file; received {checkpoint!r}."
        )
    model = keras.saving.load_model(checkpoint)
    if not isinstance(model, (models.AMixClassifier, models.AMixSSL)):
        raise ValueError(
            f"`--checkpoint` must hold an AMixClassifier (--method=amix or automix) or an "
            f"AMixSSL (train_selfsup --method=amix_i or amix_c); {checkpoint!r} holds a "
            f"{type(model).__name__}."
        )
    return model


def checkpoint_config(checkpoint):
    """The training run's config.json beside the checkpoint, or {}."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def backbone_image_size(model):
    inputs = getattr(model.backbone, "inputs", None)
    if inputs:
        height, width = inputs[0].shape[1:3]
        if height is not None and width is not None:
            return int(height), int(width)
    return None


def load_images(dataset, split, data_dir, image_size, pairs, seed, at_most=False):
    """`pairs` normalised images of `split` (chosen with `seed`) and the DatasetInfo
    (`at_most`: fewer where the split holds fewer, else a ValueError).

    They are drawn from a pool of the split's first `POOL_SIZE` images; on a
    split grouped by class (a folder, the package's .npz files) the pool is
    the first images of every class instead, or every pair would be of the
    first class. Without TensorFlow an .npz data set is read by
    `keras_amix.data.arrays` (no resizing: `image_size` must be the stored
    size)."""
    import importlib.util

    import numpy as np

    from keras_amix import data as data_lib

    if str(dataset).endswith(".npz") and importlib.util.find_spec("tensorflow") is None:
        splits, info = data_lib.arrays.load_npz(dataset)
        if split not in splits:
            raise ValueError(f"`--split`={split!r} is not a split of {dataset!r}; it holds "
                             f"{sorted(splits)}.")
        split_images, labels = splits[split]
        keep = np.arange(len(labels))
        per_class = _pool_per_class(labels)
        if per_class:
            keep = data_lib.arrays.first_per_class(labels, per_class)
        keep = keep[:POOL_SIZE]
        images = data_lib.ArrayBatches(
            split_images[keep], labels[keep], batch_size=POOL_SIZE,
            num_classes=info.num_classes, training=False, image_size=image_size,
            mean=info.mean, std=info.std)[0][0]
    else:
        info = data_lib.info(dataset, data_dir=data_dir)
        per_class = _pool_per_class(data_lib.split_labels(dataset, split, data_dir=data_dir))
        ds = data_lib.load(dataset, split, data_dir=data_dir, per_class_limit=per_class)
        ds = data_lib.pipeline(ds.take(POOL_SIZE), batch_size=POOL_SIZE,
                               num_classes=info.num_classes, training=False,
                               image_size=image_size, mean=info.mean, std=info.std)
        images = next(iter(ds))[0].numpy()
    if at_most:
        pairs = min(pairs, len(images))
    if len(images) < pairs:
        raise ValueError(
            f"`--pairs`={pairs} needs {pairs} images but split {split!r} of {dataset!r} "
            f"holds {len(images)}."
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), pairs, replace=False))
    return images[chosen], info


def _pool_per_class(labels):
    """Images per class for a pool spread over every class of a split grouped
    by class (None: the first `POOL_SIZE` images do; labels None: TFDS)."""
    import numpy as np

    from experiments import common

    if labels is None or not common.grouped_by_class(labels):
        return None
    return -(-POOL_SIZE // len(np.unique(labels)))


def plot(images, masks, mixed, perm, lams, mean, std, out, title=None, stretch_masks=False):
    """Writes the figure (rows = pairs) to `out` with matplotlib (Agg).

    Masks are drawn grey with black = 0 and white = 1, or, with
    `stretch_masks`, black = the tile's minimum and white = its maximum.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_amix.training.callbacks import denormalize

    pairs = len(images)
    cols = 2 + 2 * len(lams)
    fig, axes = plt.subplots(pairs, cols, figsize=(1.35 * cols, 1.45 * pairs + 0.6),
                             squeeze=False)
    x_a = denormalize(images, mean, std)
    panels = [("$x_a$", x_a, None), ("$x_b$", x_a[perm], None)]
    for lam, mask, mix in zip(lams, masks, mixed):
        panels.append((f"mask λ={lam:g}\nmean {mask.mean():.2f}", mask[..., 0], "mask"))
        panels.append((f"mixed λ={lam:g}", denormalize(mix, mean, std), None))
    for col, (label, tiles, kind) in enumerate(panels):
        axes[0, col].set_title(label, fontsize=8)
        for row in range(pairs):
            ax = axes[row, col]
            if kind == "mask":
                low, high = ((tiles[row].min(), max(tiles[row].max(), tiles[row].min() + 1e-6))
                             if stretch_masks else (0.0, 1.0))
                ax.imshow(tiles[row], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
                ax.set_xlabel(f"μ {tiles[row].mean():.2f} σ {tiles[row].std():.3f}", fontsize=6,
                              labelpad=1)
            else:
                ax.imshow(tiles[row], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for row in range(pairs):
        axes[row, 0].set_ylabel(f"{row} ↔ {int(perm[row])}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    # Written beside, then renamed: a kill never leaves a half-written PNG.
    tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def visualize(checkpoint, dataset=None, data_dir=None, split="test", image_size=None,
              pairs=6, lams=(0.3, 0.5, 0.7), seed=0, out=None, stretch_masks=False):
    """Draws the figure; returns `(out, stats)`.

    `stats` holds the data set, split and image size used and, per λ, the
    mask mean and the mean over pairs of the mask's spatial std.
    """
    from keras_amix.training import callbacks as callbacks_lib

    if not isinstance(pairs, int) or pairs < 2:
        raise ValueError(f"`--pairs` must be an int >= 2; received {pairs!r}.")
    lams = tuple(float(lam) for lam in lams)
    model = load_amix(checkpoint)
    config = checkpoint_config(checkpoint)
    if dataset is None:
        dataset = config.get("dataset", "digits")
        data_dir = data_dir if data_dir is not None else config.get("data_dir")
    if image_size is None:
        size = backbone_image_size(model)
        if size is None and config.get("image_size"):
            size = (int(config["image_size"]),) * 2
    else:
        size = (int(image_size), int(image_size))
    images, info = load_images(dataset, split, data_dir, size, pairs, seed)
    perm = callbacks_lib.random_derangement(pairs, seed)
    masks, mixed, perm = callbacks_lib.mix_panels(model, images, lams, perm)
    if out is None:
        out = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "amix_masks.png")
    stats = dict(
        dataset=str(dataset), split=split, image_size=tuple(images.shape[1:3]),
        lams={f"{lam:g}": dict(mask_mean=float(mask.mean()),
                               mask_spatial_std=float(mask.std(axis=(1, 2, 3)).mean()))
              for lam, mask in zip(lams, masks)},
    )
    title = (f"{os.path.basename(os.path.dirname(os.path.abspath(checkpoint)))}: "
             f"{getattr(model.mix_block, 'preset', 'mix block')} Mix Block, {dataset} {split}")
    if stretch_masks:
        title += " (masks contrast-stretched per tile)"
    plot(images, masks, mixed, perm, lams, info.mean, info.std, out, title=title,
         stretch_masks=stretch_masks)
    return out, stats


def main(argv):
    del argv
    out, stats = visualize(
        FLAGS.checkpoint, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
        image_size=FLAGS.image_size, pairs=FLAGS.pairs, lams=[float(v) for v in FLAGS.lams],
        seed=FLAGS.seed, out=FLAGS.out, stretch_masks=FLAGS.stretch_masks,
    )
    for lam, values in stats["lams"].items():
        print(f"λ={lam}: mask mean {values['mask_mean']:.4f}, "
              f"mean spatial std {values['mask_spatial_std']:.4f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    flags.mark_flag_as_required("checkpoint", flag_values=FLAGS)
    app.run(main, flags_parser=common.flags_parser(FLAGS, __doc__))
