r"""Training-step time of AutoMix / AMix (and static mixers) relative to vanilla.

All models are built once and timed side by side in interleaved rounds on the
same batch (ResNet-18, CIFAR stem); the table reports the median step time
and its ratio to the vanilla step. Run under each backend:

    KERAS_BACKEND=tensorflow python -m benchmarks.bench_amix_step
    KERAS_BACKEND=jax python -m benchmarks.bench_amix_step --out=runs/bench/amix_step_jax.json
"""

import statistics
import time

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
    import keras

    from keras_amix import backbones, models

    backbone = backbones.resnet(18, width=FLAGS.width, input_shape=(FLAGS.image_size,) * 2 + (3,))
    if method == "vanilla":
        model = models.MixupClassifier(backbone, num_classes)
    elif method in ("automix", "amix"):
        model = models.AMixClassifier(backbone, num_classes, mix_block=method, total_steps=1000)
    else:
        model = models.MixupClassifier(backbone, num_classes, mixer=method)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
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
    for model in models_.values():  # compile and warm up
        for _ in range(2):
            model.train_on_batch(x, y)
    times = {m: [] for m in models_}
    for _ in range(FLAGS.rounds):
        for name, model in models_.items():
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / FLAGS.steps)
    base = statistics.median(times[FLAGS.methods[0]])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append(dict(method=name, step_ms=1000 * median, img_per_s=FLAGS.batch_size / median,
                         ratio_to_first=median / base))
    common.print_table(rows, ["method", "step_ms", "img_per_s", "ratio_to_first"])
    common.write_json(FLAGS.out, dict(
        machine=common.machine(), batch_size=FLAGS.batch_size, image_size=FLAGS.image_size,
        width=FLAGS.width, rounds=FLAGS.rounds, steps=FLAGS.steps, rows=rows,
        raw_seconds_per_step=times, reference=FLAGS.methods[0]))


if __name__ == "__main__":
    app.run(main)
