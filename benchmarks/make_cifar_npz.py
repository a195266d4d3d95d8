r"""Writes the calibrated CIFAR-10 budget of DESIGN §12 as an .npz.

The first `--per_class` training images of each class (sorted file names) and
the whole test split of the CIFAR-10 JPEG copy, as uint8 arrays, through the
package's own folder loader:

    tar -xJf ../shared/data/cifar10-jpg.tar.xz -C /tmp/data
    python -m benchmarks.make_cifar_npz --data=/tmp/data/cifar10-jpg --out=runs/cifar10_5k.npz
"""

import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "CIFAR-10 JPEG copy root (train/ and test/ folders).")
flags.DEFINE_integer("per_class", 500, "Training images kept per class.")
flags.DEFINE_string("out", "runs/cifar10_5k.npz", "Output file.")
flags.mark_flag_as_required("data")


def main(argv):
    del argv
    import numpy as np

    from keras_amix import data

    arrays = {}
    for split, limit in (("train", FLAGS.per_class), ("test", None)):
        images, labels = [], []
        for image, label in data.load(FLAGS.data, split, per_class_limit=limit).as_numpy_iterator():
            images.append(image)
            labels.append(label)
        arrays[f"x_{split}"] = np.stack(images).astype("uint8")
        arrays[f"y_{split}"] = np.asarray(labels, "int64")
        print(split, arrays[f"x_{split}"].shape, np.bincount(arrays[f"y_{split}"]))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    tmp = FLAGS.out + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, FLAGS.out)
    print("wrote", FLAGS.out)


if __name__ == "__main__":
    app.run(main)
