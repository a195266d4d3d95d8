r"""Training-step time of AutoMix / AMix (and static mixers) relative to vanilla.

All models are built once, by `experiments.train_supervised` (its `cpu_cifar10`
recipe: the model, α and optimizer a user's run gets), and timed side by side in
interleaved rounds on the same batch (ResNet-18, CIFAR stem); the table reports
the median step time and its ratio to the vanilla step. Run under each backend:

    KERAS_BACKEND=tensorflow python -m benchmarks.bench_amix_step
    KERAS_BACKEND=jax python -m benchmarks.bench_amix_step --out=runs/bench/amix_step_jax.json
"""

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["vanilla", "mixup", "automix", "amix"],
                  "vanilla | a mixer name | automix | amix")
flags.DEFINE_integer("batch_size", 100, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_integer("width", 16, "ResNet-18 base width.")
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
flags.DEFINE_integer("steps", 5, "Steps per model per round.")
flags.DEFINE_string("out", "runs/bench/amix_step.json", "JSON output.")


def build(method, num_classes):
    """The binary's model and optimizer for `method` (the `cpu_cifar10` recipe)."""
    from experiments import train_supervised as ts

    cfg = ts.config_for("cpu_cifar10", method=method, width=FLAGS.width,
                        image_size=FLAGS.image_size, batch_size=FLAGS.batch_size)
    model = ts.build_model(cfg, num_classes, total_steps=1000)
    model.compile(optimizer=ts.make_optimizer(cfg, steps_per_epoch=50))
    return model


def main(argv):
    del argv
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    classes = 10
    x = rng.normal(size=(FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, FLAGS.batch_size), classes)
    models_ = {m: build(m, classes) for m in FLAGS.methods}
    times = common.time_interleaved(
        {name: (lambda m=model: m.train_on_batch(x, y)) for name, model in models_.items()},
        rounds=FLAGS.rounds, repeats=FLAGS.steps)
    rows = common.ratio_rows(times, FLAGS.batch_size, reference=FLAGS.methods[0])
    common.print_table(rows, ["method", "step_ms", "img_per_s", "ratio_to_first"])
    common.write_json(FLAGS.out, dict(
        machine=common.machine(), batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        width=FLAGS.width, rounds=FLAGS.rounds, steps=FLAGS.steps, rows=rows,
        raw_seconds_per_step=times, reference=FLAGS.methods[0]))


if __name__ == "__main__":
    app.run(main)
