r"""Training-step time of MoCo v2 variants relative to plain MoCo v2.

All models are built once, by `experiments.train_selfsup` (its `cpu_cifar10`
recipe: the model, α and optimizer a user's run gets), and timed side by side in
interleaved rounds on the same two-view batch (ResNet-18, CIFAR stem); the table
reports the median step time and its ratio to the first method (plain MoCo v2).
Run under each backend:

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
    """The binary's model and optimizer for `method` (the `cpu_cifar10` recipe);
    the ODC methods cluster the one batch into 8 clusters."""
    from experiments import common as exp_common
    from experiments import train_selfsup as tss

    clusters = {"num_clusters": 8} if method in tss.CLUSTER_METHODS else {}
    cfg = tss.config_for("cpu_cifar10", method=method, width=FLAGS.width,
                         image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
                         queue_size=FLAGS.queue_size, per_class_limit=None, **clusters)
    model = tss.build_model(cfg, num_samples=FLAGS.batch_size)
    model.compile(optimizer=exp_common.cosine_sgd(cfg, cfg.lr, steps_per_epoch=50))
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
