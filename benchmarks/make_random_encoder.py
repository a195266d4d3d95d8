r"""Reference encoder for the self-supervised comparison: random weights.

Builds the encoder of `experiments/train_selfsup.py --preset=cpu_cifar10` with
random initial weights, estimates its BatchNorm statistics on `--batches`
two-view training batches (forward passes in training mode, no weight update)
and saves it as encoder.keras, so that linear evaluation of it gives the
"no pretraining" row of the table:

    python -m benchmarks.make_random_encoder --dataset=/data/cifar10-jpg \
        --out=runs/ssl_cifar10/random_init/encoder.keras
"""

import dataclasses
import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "The data set of the comparison (e.g. the CIFAR-10 copy).")
flags.DEFINE_integer("batches", 20, "Batches for the BatchNorm statistics.")
flags.DEFINE_integer("seed", 0, "Seed of the random weights.")
flags.DEFINE_string("out", "runs/ssl_cifar10/random_init/encoder.keras", "Output file.")
flags.mark_flag_as_required("dataset")


def main(argv):
    del argv
    import keras

    from experiments import common
    from experiments import train_selfsup as tss

    cfg = dataclasses.replace(tss.PRESETS["cpu_cifar10"], dataset=FLAGS.dataset,
                              seed=FLAGS.seed)
    keras.utils.set_random_seed(cfg.seed)
    model = tss.build_model(cfg)
    ds, _, _ = tss.train_dataset(cfg)
    for x, _ in ds.take(FLAGS.batches):
        model.backbone(x["view1"], training=True)  # updates the BatchNorm statistics only
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    common.save_keras_atomic(model.encoder(), FLAGS.out)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
