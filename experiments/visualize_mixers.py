r"""Draws what each mixer does to a few real image pairs: `mixers.png`.

The figure has one row per mixer and, per source pair, two cells: the mixed
image (λ printed above it) and its mask, the per-pixel weight of the first
image a (white = pixel from a, black = pixel from b, grey = blend). The first
row shows the raw pairs (a | b). Every row mixes the *same* pairs: the batch
holds 2·P images and the pairing is fixed to x_i ↔ x_{i+P} (the mixer's
`sample_perm` is replaced by this fixed permutation), and λ is drawn per
sample (`per_sample=True`) so the columns show different ratios.

Pixel values: images are loaded as uint8, scaled to [0, 1] and mixed there, so
no normalisation has to be undone for display. Digits (8×8) are resized to
`--image_size` (default 32) bilinearly; other data sets keep their native size
unless `--image_size` is given (224 where the native size varies).

Saliency for PuzzleMix and Co-Mixup: in training they use |∂loss/∂x| of the
model being trained; an untrained model's gradient says nothing, so this
figure uses an image-only proxy instead, the spectral-residual saliency of the
grey image (`keras_amix.mixers.saliencymix.spectral_residual_saliency`, the
map SaliencyMix uses). PuzzleMix's mask is drawn after transport: it is the
weight of the transported image a at each pixel.

ManifoldMix mixes hidden features at a random stage; it is not in the default
`--methods`. Asked for explicitly, it is drawn as its input-layer case (MixUp
of the images), and its row label says so.

Outputs in `--workdir` (default runs/visualize): `mixers.png` and
`mixers.json` (the resolved config and every drawn λ).

Examples:

    python -m experiments.visualize_mixers
    python -m experiments.visualize_mixers --dataset=/data/cifar10-jpg --split=test \
        --pairs=6 --seed=1
"""

import json
import os

from absl import app
from absl import flags

from experiments import common

DEFAULT_METHODS = ("mixup", "cutmix", "saliencymix", "fmix", "resizemix", "puzzlemix",
                   "comixup")
ALL_METHODS = DEFAULT_METHODS + ("manifoldmix",)

# Figure geometry (inches); at `--dpi` the PNG is `figure_size(...) * dpi` pixels.
CELL = 1.1
PAIR_GAP = 0.15
LEFT = 1.5
TOP = 0.75
BOTTOM = 0.45

# The binary's own flags (not absl's global FLAGS), so that the binaries,
# which share flag names, import into one process.
FLAGS = flags.FlagValues()
flags.DEFINE_string("dataset", "digits", "A name or path that keras_amix.data.load reads.",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Data folder passed to keras_amix.data.load.",
                    flag_values=FLAGS)
flags.DEFINE_string("split", "train", "Split to draw the images from.", flag_values=FLAGS)
flags.DEFINE_integer("pairs", 4, "Number of image pairs (columns).", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None,
                     "Side of the drawn images: default 32 for digits, the native size "
                     "otherwise (224 where it varies).", flag_values=FLAGS)
flags.DEFINE_list("methods", list(DEFAULT_METHODS),
                  "Mixers, one row each (manifoldmix is drawn as its input-layer MixUp).",
                  flag_values=FLAGS)
flags.DEFINE_float("alpha", None, "Beta(α, α) for every mixer; default: each mixer's own.",
                   flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed for the image choice and every mixer.", flag_values=FLAGS)
flags.DEFINE_integer("dpi", 100, "Resolution of the PNG.", flag_values=FLAGS)
flags.DEFINE_string("workdir", "runs/visualize", "Output folder.", flag_values=FLAGS)


def figure_size(num_pairs, num_methods):
    """(width, height) in inches of the figure for these many pairs / mixers."""
    width = LEFT + num_pairs * 2 * CELL + (num_pairs - 1) * PAIR_GAP + 0.1
    height = TOP + (num_methods + 1) * CELL + BOTTOM
    return width, height


def check_args(pairs, methods, image_size):
    if pairs < 1:
        raise ValueError(f"`--pairs` must be >= 1; received {pairs}.")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown or not methods:
        raise ValueError(
            f"`--methods` must be a non-empty subset of {list(ALL_METHODS)}; "
            f"received {methods}."
        )
    if image_size is not None and image_size < 4:
        raise ValueError(f"`--image_size` must be >= 4; received {image_size}.")


def load_images(dataset, split, data_dir, count, image_size, seed):
    """`count` images (count, S, S, 3) float32 in [0, 1] and their int labels.

    The images are a seeded random choice of the split (file order shuffled
    with the global seed; the default image size is 32 for digits, native
    otherwise).
    """
    import keras
    import numpy as np

    from keras_amix import data

    keras.utils.set_random_seed(seed)
    ds = data.load(dataset, split, data_dir=data_dir, shuffle_files=True)
    images, labels = [], []
    for image, label in ds.take(count):
        images.append(np.asarray(image))
        labels.append(int(label))
    if len(images) < count:
        raise ValueError(
            f"Split '{split}' of {dataset!r} has {len(images)} images; `--pairs` needs "
            f"{count} (2 per pair)."
        )
    if image_size is None:
        if str(dataset).lower() == "digits":
            image_size = 32
        else:
            native = data.info(dataset, data_dir=data_dir).image_size
            image_size = native[0] if native and native[0] == native[1] else 224
    resized = []
    for image in images:
        x = image.astype("float32") / 255.0
        if x.shape[:2] != (image_size, image_size):
            x = keras.ops.convert_to_numpy(
                keras.ops.image.resize(x, (image_size, image_size), interpolation="bilinear")
            )
        resized.append(np.clip(x, 0.0, 1.0))
    return np.stack(resized).astype("float32"), np.asarray(labels), image_size


def proxy_saliency(images):
    """Spectral-residual saliency of the grey images, (B, H, W, 1) numpy."""
    from keras import ops

    from keras_amix.mixers.saliencymix import spectral_residual_saliency
    from keras_amix.mixers.saliencymix import to_gray

    return ops.convert_to_numpy(spectral_residual_saliency(to_gray(images)))[..., None]


def mix_fixed_pairs(method, images, labels, num_classes, alpha, seed):
    """Mixes x_i with x_{i+P} (batch of 2P) with one mixer.

    Returns `(mixed, mask, lam)` for the first P outputs: mixed (P, H, W, 3)
    in [0, 1], mask (P, H, W) = weight of image a, lam (P,).
    """
    import numpy as np
    from keras import ops

    from keras_amix import mixers

    batch = images.shape[0]
    half = batch // 2
    kwargs = dict(per_sample=True, seed=seed)
    if alpha is not None:
        kwargs["alpha"] = alpha
    mixer = mixers.get(method, **kwargs)
    perm = np.concatenate([np.arange(half, batch), np.arange(half)]).astype("int32")
    # The fixed pairing: every row of the figure mixes the pairs of its first row.
    mixer.sample_perm = lambda batch_size: ops.convert_to_tensor(perm)
    onehot = np.eye(num_classes, dtype="float32")[labels]
    extra = {"saliency": proxy_saliency(images)} if mixer.requires_saliency else {}
    params = mixer.sample_params(images, onehot, **extra)
    mixed = mixer.mix_images(images, ops.take(images, perm, axis=0), params)
    lam = ops.convert_to_numpy(params["lam"])
    if "mask" in params:
        mask = ops.convert_to_numpy(params["mask"])[..., 0]
    else:  # MixUp (and ManifoldMix at the input): one blending weight per image.
        mask = np.broadcast_to(lam[:, None, None], images.shape[:3])
    mixed = np.clip(ops.convert_to_numpy(mixed), 0.0, 1.0)
    return mixed[:half], np.asarray(mask[:half]), lam[:half]


def row_label(method):
    if method == "manifoldmix":
        return "manifoldmix\n(input layer\n= MixUp)"
    return method


def draw(path, images, labels, rows, title, dpi):
    """Writes the grid PNG. rows: list of (method, mixed, mask, lam)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = images.shape[0] // 2
    width, height = figure_size(pairs, len(rows))
    fig = plt.figure(figsize=(width, height), dpi=dpi)

    def cell(r, c):
        x = LEFT + c * CELL + (c // 2) * PAIR_GAP
        y = height - TOP - (r + 1) * CELL
        pad = 0.06
        return fig.add_axes([(x + pad) / width, (y + pad) / height,
                             (CELL - 2 * pad) / width, (CELL - 2 * pad - 0.14) / height])

    def show(ax, picture, text, grey=False):
        if grey:
            ax.imshow(picture, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            ax.imshow(picture, interpolation="nearest")
        ax.set_title(text, fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])

    def label_row(r, text):
        y = height - TOP - (r + 0.5) * CELL
        fig.text(0.1 / width, y / height, text, fontsize=9, va="center", ha="left")

    label_row(0, "pairs (a | b)")
    for i in range(pairs):
        show(cell(0, 2 * i), images[i], f"a: class {labels[i]}")
        show(cell(0, 2 * i + 1), images[i + pairs], f"b: class {labels[i + pairs]}")
    for r, (method, mixed, mask, lam) in enumerate(rows, start=1):
        label_row(r, row_label(method))
        for i in range(pairs):
            show(cell(r, 2 * i), mixed[i], f"λ = {lam[i]:.2f}")
            show(cell(r, 2 * i + 1), mask[i], "mask (weight of a)", grey=True)
    fig.text(0.5, 1.0 - 0.3 / height, title, fontsize=10, ha="center", va="center")
    fig.text(
        0.5, 0.22 / height,
        "mask: weight of image a (white = a, black = b); λ = mean mask = fraction of a. "
        "PuzzleMix / Co-Mixup saliency: spectral-residual proxy (no model).",
        fontsize=7, ha="center", va="center",
    )
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def run(dataset="digits", data_dir=None, split="train", pairs=4, image_size=None,
        methods=DEFAULT_METHODS, alpha=None, seed=0, dpi=100, workdir="runs/visualize"):
    """Draws the figure; returns the path of `mixers.png`."""
    methods = [m.strip().lower() for m in methods]
    check_args(pairs, methods, image_size)
    images, labels, image_size = load_images(dataset, split, data_dir, 2 * pairs,
                                             image_size, seed)
    num_classes = int(labels.max()) + 1
    rows, lams = [], {}
    for index, method in enumerate(methods):
        mixed, mask, lam = mix_fixed_pairs(method, images, labels, num_classes, alpha,
                                           seed + index)
        rows.append((method, mixed, mask, lam))
        lams[method] = [float(v) for v in lam]
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "mixers.png")
    title = f"Mixers on {os.path.basename(str(dataset).rstrip('/'))} / {split}, " \
            f"{image_size}×{image_size}, seed {seed}"
    draw(path, images, labels, rows, title, dpi)
    config = dict(dataset=str(dataset), data_dir=data_dir, split=split, pairs=pairs,
                  image_size=image_size, methods=methods, alpha=alpha, seed=seed, dpi=dpi,
                  saliency="spectral_residual_proxy", pairing="x_i with x_{i+pairs}",
                  per_sample_lambda=True)
    with open(os.path.join(workdir, "mixers.json"), "w") as f:
        json.dump(dict(config=config, lam=lams, labels=labels.tolist()), f, indent=2)
    return path


def main(argv):
    del argv
    path = run(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
               pairs=FLAGS.pairs, image_size=FLAGS.image_size, methods=FLAGS.methods,
               alpha=FLAGS.alpha, seed=FLAGS.seed, dpi=FLAGS.dpi, workdir=FLAGS.workdir)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=common.flags_parser(FLAGS, __doc__))
