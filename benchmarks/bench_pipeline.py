r"""Input-pipeline images/s against training images/s, measured in one run.

ResNet-18 (CIFAR stem, width 16) at 32x32 on the CIFAR-10 JPEG copy: the
training pipeline (decode from cache, flip + reflect-pad crop, normalise,
one-hot, batch) is iterated alone, then a vanilla model trains on the same
pipeline. The pipeline must be several times faster than training, so the
GPU/CPU never waits for data.

    tar -xJf ../shared/data/cifar10-jpg.tar.xz -C /tmp/data
    python -m benchmarks.bench_pipeline --data=/tmp/data/cifar10-jpg
"""

import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Image-folder root of the CIFAR-10 copy (or any data set).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("width", 16, "ResNet-18 base width.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches read for the pipeline rate.")
flags.DEFINE_integer("train_steps", 40, "Steps timed for the training rate.")
flags.DEFINE_string("out", "runs/bench/pipeline.json", "JSON output.")
flags.mark_flag_as_required("data")


def main(argv):
    del argv
    import keras

    from keras_amix import backbones, data, models

    info = data.info(FLAGS.data)
    raw = data.load(FLAGS.data, "train")
    ds = data.pipeline(raw, batch_size=FLAGS.batch_size, num_classes=info.num_classes,
                       training=True, image_size=32, augment="cifar", mean=info.mean,
                       std=info.std, cache=True).repeat()
    iterator = iter(ds)
    for _ in range(400):  # fills the cache (first pass decodes JPEGs) and warms up
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.pipeline_batches):
        next(iterator)
    pipeline_rate = FLAGS.pipeline_batches * FLAGS.batch_size / (time.perf_counter() - start)

    model = models.MixupClassifier(backbones.resnet(18, width=FLAGS.width), info.num_classes)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    model.fit(ds, steps_per_epoch=5, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=FLAGS.train_steps, epochs=1, verbose=0)
    train_rate = FLAGS.train_steps * FLAGS.batch_size / (time.perf_counter() - start)

    rows = [dict(what="input pipeline", img_per_s=pipeline_rate),
            dict(what="training (vanilla, fit)", img_per_s=train_rate),
            dict(what="ratio pipeline/training", img_per_s=pipeline_rate / train_rate)]
    common.print_table(rows, ["what", "img_per_s"])
    common.write_json(FLAGS.out, dict(machine=common.machine(), batch_size=FLAGS.batch_size,
                                      width=FLAGS.width, pipeline_img_per_s=pipeline_rate,
                                      train_img_per_s=train_rate,
                                      ratio=pipeline_rate / train_rate))


if __name__ == "__main__":
    app.run(main)
