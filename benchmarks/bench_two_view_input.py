r"""MoCo v2 two-view input, images/s: tf.data against the NumPy twin, in one run.

`keras_amix.data.two_view_pipeline` (tf.data, TensorFlow) and
`keras_amix.data.TwoViewBatches` (NumPy, one process, what a machine without
TensorFlow uses) make the same views (RandomResizedCrop 0.2-1, colour jitter,
grey, blur, flip, normalise) of the same `.npz` images; both are timed in
interleaved rounds so that a busy machine slows both alike.

    python -m benchmarks.make_cifar_npz --data=/tmp/data/cifar10-jpg --out=/tmp/cifar10_5k.npz
    python -m benchmarks.bench_two_view_input --data=/tmp/cifar10_5k.npz
"""

import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "An .npz data set (x_train / y_train uint8 images).")
flags.DEFINE_integer("batch_size", 256, "Batch size (MoCo v2: 256).")
flags.DEFINE_integer("image_size", 32, "View size.")
flags.DEFINE_integer("batches", 20, "Batches timed per round and input.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_string("out", "runs/bench/two_view_input.json", "JSON output.")
flags.mark_flag_as_required("data")


def main(argv):
    del argv
    import numpy as np

    from keras_amix import data

    splits, info = data.arrays.load_npz(FLAGS.data)
    images, labels = splits["train"]
    size, batch = FLAGS.image_size, FLAGS.batch_size
    tf_ds = data.two_view_pipeline(data.load(FLAGS.data, "train"), batch_size=batch,
                                   image_size=size, mean=info.mean, std=info.std, seed=0,
                                   cache=True).repeat()
    np_ds = data.TwoViewBatches(images, labels, batch_size=batch, num_classes=info.num_classes,
                                image_size=size, mean=info.mean, std=info.std, seed=0,
                                epochs=1000)
    tf_iter = iter(tf_ds)
    for _ in range(3):  # fills the cache, traces the maps
        next(tf_iter)
    np_ds[0]
    inputs = {"tf.data (two_view_pipeline)": lambda i: next(tf_iter),
              "NumPy (TwoViewBatches, 1 process)": lambda i: np_ds[i % len(np_ds)]}
    seconds = {name: [] for name in inputs}
    for r in range(FLAGS.rounds):
        for name, read in inputs.items():
            start = time.perf_counter()
            for i in range(FLAGS.batches):
                read(r * FLAGS.batches + i)
            seconds[name].append(time.perf_counter() - start)
    rates = {name: FLAGS.batches * batch / float(np.median(s)) for name, s in seconds.items()}
    reference = rates["tf.data (two_view_pipeline)"]
    rows = [dict(input=name, img_per_s=rate, relative_to_tf_data=rate / reference)
            for name, rate in rates.items()]
    common.print_table(rows, ["input", "img_per_s", "relative_to_tf_data"])
    common.write_json(FLAGS.out, dict(machine=common.machine(), data=FLAGS.data,
                                      batch_size=batch, image_size=size, rows=rows))


if __name__ == "__main__":
    app.run(main)
