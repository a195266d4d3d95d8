r"""Training-step time of MoCo v2 variants relative to plain MoCo v2.

All models are built once and timed side by side in interleaved rounds on the
same two-view batch (ResNet-18, CIFAR stem); the table reports the median step
time and its ratio to the first method (plain MoCo v2). Run under each backend:

    KERAS_BACKEND=tensorflow python -m benchmarks.bench_moco_step
    KERAS_BACKEND=jax python -m benchmarks.bench_moco_step --out=runs/bench/moco_step_jax.json
"""

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["mocov2", "mixup", "imix", "unmix", "mochi", "inter_intra",
                             "amix_i", "amix_c"],
                  "mocov2 | a cross-view mixer name | imix | unmix | mochi | inter_intra | "
                  "amix_i | amix_c")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_integer("width", 16, "ResNet-18 base width.")
flags.DEFINE_integer("queue_size", 4096, "Queue size.")
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
flags.DEFINE_integer("steps", 5, "Steps per model per round.")
flags.DEFINE_string("out", "runs/bench/moco_step.json", "JSON output.")


def build(method):
    import keras

    from keras_amix import backbones, models

    backbone = backbones.resnet(18, width=FLAGS.width, input_shape=(FLAGS.image_size,) * 2 + (3,))
    clusters = dict(num_samples=FLAGS.batch_size, num_clusters=8)  # ODC over the one batch
    if method in ("amix_i", "amix_c"):
        variant = "instance" if method == "amix_i" else "cluster"
        model = models.AMixSSL(backbone, variant=variant, queue_size=FLAGS.queue_size, seed=0,
                               **(clusters if variant == "cluster" else {}))
    else:
        model = models.MoCoV2(backbone, queue_size=FLAGS.queue_size,
                              mixer=None if method == "mocov2" else method, seed=0,
                              **(clusters if method == "inter_intra" else {}))
    model.compile(optimizer=keras.optimizers.SGD(0.03, momentum=0.9))
    return model


def main(argv):
    del argv
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    x = {"view1": rng.normal(size=shape).astype("float32"),
         "view2": rng.normal(size=shape).astype("float32"),
         "ids": np.arange(FLAGS.batch_size, dtype="int64")}  # read by the ODC methods only
    y = np.zeros((FLAGS.batch_size,), "int64")  # unused by the model
    models_ = {m: build(m) for m in FLAGS.methods}
    times = common.time_interleaved(
        {name: (lambda m=model: m.train_on_batch(x, y)) for name, model in models_.items()},
        rounds=FLAGS.rounds, repeats=FLAGS.steps)
    rows = common.ratio_rows(times, FLAGS.batch_size, reference=FLAGS.methods[0])
    common.print_table(rows, ["method", "step_ms", "img_per_s", "ratio_to_first"])
    common.write_json(FLAGS.out, dict(
        machine=common.machine(), batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        width=FLAGS.width, queue_size=FLAGS.queue_size, rounds=FLAGS.rounds, steps=FLAGS.steps,
        rows=rows, raw_seconds_per_step=times, reference=FLAGS.methods[0]))


if __name__ == "__main__":
    app.run(main)
