"""Dataset registry: defaults (classes, native size, channel statistics, splits).

`DATASETS` maps a dataset name to a `DatasetInfo`. Folder, archive-layout and
`.npz` datasets get a `DatasetInfo` computed by `keras_amix.data.info(path)`.
"""

import dataclasses
from typing import Optional

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The largest images trained with the CIFAR augmentation (pad 4, random crop,
# flip): the paper's CIFAR data sets; larger ones (Tiny-ImageNet's 64 px, STL-10,
# photos) take the random resized crop of the ImageNet augmentation.
CIFAR_AUGMENT_MAX = 32


def augment_for(image_size):
    """The default training augmentation of a user's data set (a folder or an
    .npz file) whose images are `image_size` `(h, w)` (None: they differ):
    "cifar" up to `CIFAR_AUGMENT_MAX` px, else "imagenet"."""
    return "cifar" if image_size and max(image_size) <= CIFAR_AUGMENT_MAX else "imagenet"


# Per-channel statistics of the `digits` train split (80 %, stratified,
# random_state=0) after scaling 0-16 to 0-255 (rounded) and repeating the grey channel;
# `tests/data/test_sources.py` recomputes them from the data.
DIGITS_MEAN = (0.3054, 0.3054, 0.3054)
DIGITS_STD = (0.3760, 0.3760, 0.3760)
# The same for `scattered_digits` (each 8 x 8 digit on a black 24 x 24 canvas).
SCATTERED_DIGITS_MEAN = (0.0339, 0.0339, 0.0339)
SCATTERED_DIGITS_STD = (0.1579, 0.1579, 0.1579)
SCATTERED_DIGITS_CANVAS = 24

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Args:
        name: dataset name (registry key, or the folder / file path).
        num_classes: number of classes (labels are `0 .. num_classes - 1`;
            `-1` marks unlabelled samples).
        image_size: native `(height, width)`; `None` where images vary in size.
        channels: number of image channels after loading (always 3 here).
        mean: per-channel mean in `[0, 1]` units, used for normalisation.
        std: per-channel standard deviation in `[0, 1]` units.
        splits: names of the available splits.
        num_examples: `{split: count}` where known (may be empty).
        augment: default training augmentation preset for `pipeline`
            (`"cifar"` or `"imagenet"`).
        source: where the data comes from: `"tfds"`, `"digits"`, `"folder"`,
            `"tiny_imagenet"`, `"fgvc_aircraft"` or `"npz"`.
    """

    name: str
    num_classes: int
    image_size: Optional[tuple]
    channels: int
    mean: tuple
    std: tuple
    splits: tuple
    num_examples: dict = dataclasses.field(default_factory=dict)
    augment: str = "imagenet"
    source: str = "tfds"


DATASETS = {
    "digits": DatasetInfo(
        name="digits",
        num_classes=10,
        image_size=(8, 8),
        channels=3,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        splits=("train", "test"),
        num_examples={"train": 1437, "test": 360},
        augment="cifar",
        source="digits",
    ),
    # The digits, each pasted at a random fixed position (drawn once, seeded
    # per split) of a black 24 x 24 canvas: two images of a pair then cover
    # different places, the case a learned mask can do better than a blend
    # of the two (the demo's data; BUILD_NOTES 2026-12-07).
    "scattered_digits": DatasetInfo(
        name="scattered_digits",
        num_classes=10,
        image_size=(SCATTERED_DIGITS_CANVAS, SCATTERED_DIGITS_CANVAS),
        channels=3,
        mean=SCATTERED_DIGITS_MEAN,
        std=SCATTERED_DIGITS_STD,
        splits=("train", "test"),
        num_examples={"train": 1437, "test": 360},
        augment="cifar",
        source="digits",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        image_size=(32, 32),
        channels=3,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        splits=("train", "test"),
        num_examples={"train": 50000, "test": 10000},
        augment="cifar",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        image_size=(32, 32),
        channels=3,
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        splits=("train", "test"),
        num_examples={"train": 50000, "test": 10000},
        augment="cifar",
    ),
    "stl10": DatasetInfo(
        name="stl10",
        num_classes=10,
        image_size=(96, 96),
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=("train", "test", "unlabelled"),
        num_examples={"train": 5000, "test": 8000, "unlabelled": 100000},
        augment="imagenet",
    ),
    "caltech_birds2011": DatasetInfo(
        name="caltech_birds2011",
        num_classes=200,
        image_size=None,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=("train", "test"),
        num_examples={"train": 5994, "test": 5794},
        augment="imagenet",
    ),
    "imagenet2012": DatasetInfo(
        name="imagenet2012",
        num_classes=1000,
        image_size=None,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=("train", "validation"),
        num_examples={"train": 1281167, "validation": 50000},
        augment="imagenet",
    ),
    "tiny_imagenet": DatasetInfo(
        name="tiny_imagenet",
        num_classes=200,
        image_size=(64, 64),
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=("train", "val"),
        num_examples={"train": 100000, "val": 10000},
        augment="imagenet",
        source="tiny_imagenet",
    ),
    "fgvc_aircraft": DatasetInfo(
        name="fgvc_aircraft",
        num_classes=100,
        image_size=None,
        channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        splits=("train", "val", "trainval", "test"),
        num_examples={"train": 3334, "val": 3333, "trainval": 6667, "test": 3333},
        augment="imagenet",
        source="fgvc_aircraft",
    ),
}

TFDS_NAMES = ("cifar10", "cifar100", "stl10", "caltech_birds2011", "imagenet2012")
