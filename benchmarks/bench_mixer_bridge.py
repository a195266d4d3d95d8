r"""A mixer inside tf.data, images/s per backend: TensorFlow's graph against the
JAX / torch bridge (`keras_amix.data.mixer_bridge`), in one run.

One child process per backend (the backend is fixed when Keras loads) times the
same pipeline (random float32 images, one-hot labels, `batch`, then `map(mixer)`
or no map) over interleaved rounds; the parent prints one table: each
pipeline's images/s, its rate relative to the same backend's pipeline without
a mixer, and relative to TensorFlow's for the same mixer.

    python -m benchmarks.bench_mixer_bridge [--batch_size=128 --image_size=32]
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_integer("batches", 20, "Batches timed per round and pipeline.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
flags.DEFINE_list("mixers", ["mixup", "cutmix"], "Mixers to time.")
flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Backends (one child each; a "
                  "backend whose package is missing is skipped).")
flags.DEFINE_string("child", None, "Internal: time the pipelines on this backend, print JSON.")
flags.DEFINE_string("out", "runs/bench/mixer_bridge.json", "JSON output.")


def _child():
    import numpy as np
    import tensorflow as tf

    from keras_amix import mixers

    batch, size = FLAGS.batch_size, FLAGS.image_size
    rng = np.random.default_rng(0)
    n = batch * FLAGS.batches
    images = rng.random((n, size, size, 3), dtype=np.float32)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    base = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache()
    pipelines = {"none": base}
    for name in FLAGS.mixers:
        pipelines[name] = base.map(mixers.get(name, seed=0))
    # One step = one pass over a pipeline; the warm-up pass fills the cache,
    # traces the maps and compiles the ops.
    seconds = common.time_interleaved(
        {name: (lambda ds=ds: [None for _ in ds]) for name, ds in pipelines.items()},
        rounds=FLAGS.rounds, repeats=1, warmup=1)
    print(json.dumps({name: n / float(np.median(s)) for name, s in seconds.items()}))


def main(argv):
    del argv
    if FLAGS.child:
        return _child()
    rates, skipped = {}, []
    args = [a for a in sys.argv[1:] if not a.startswith("--child")]
    for backend in FLAGS.backends:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_mixer_bridge", f"--child={backend}", *args],
            env={**os.environ, "KERAS_BACKEND": backend,
                 "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True, text=True)
        if proc.returncode != 0:
            skipped.append(backend)
            print(f"{backend}: skipped ({proc.stderr.strip().splitlines()[-1:]})")
            continue
        rates[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = []
    for backend, by_mixer in rates.items():
        for name, rate in by_mixer.items():
            rows.append(dict(
                backend=backend, mixer=name, img_per_s=rate,
                relative_to_no_mixer=rate / by_mixer["none"],
                relative_to_tensorflow=(rate / rates["tensorflow"][name]
                                        if "tensorflow" in rates else float("nan"))))
    common.print_table(rows, ["backend", "mixer", "img_per_s", "relative_to_no_mixer",
                              "relative_to_tensorflow"])
    common.write_json(FLAGS.out, dict(machine=common.machine(), batch_size=FLAGS.batch_size,
                                      image_size=FLAGS.image_size, batches=FLAGS.batches,
                                      rounds=FLAGS.rounds, skipped=skipped, rows=rows))


if __name__ == "__main__":
    app.run(main)
