r"""Mixer throughput against Keras / keras-cv, and training-step cost per mixer.

Part (a), mixer throughput: every mixer (ours, `keras.layers.MixUp` /
`keras.layers.CutMix`, keras-cv's `MixUp` / `CutMix` / `FourierMix` when
keras-cv imports) is wrapped in one `tf.function` and called on the *same*
pre-built float32 batches (one-hot labels), at each `--sizes` resolution. The
calls are interleaved: each round calls every mixer `--calls` times, so slow
drifts of the machine hit all mixers alike; the table reports the median over
rounds of the per-call time, images/s and the time relative to the matching
reference implementation (`time_vs_ref` < 1: ours is faster). Fast mixers
get more calls per round (`--min_round_seconds`) so that a millisecond call
is not timed from three samples on a busy machine. PuzzleMix and
Co-Mixup get a random saliency map of the batch's size.

Part (b), training step: a `MixupClassifier` (ResNet-18, CIFAR stem,
`--width`) per method, vanilla plus every registered mixer, timed with
`model.train_on_batch` on one random batch in interleaved rounds; the ratio
column is the median step time over the vanilla model's. The row
"(saliency pass)" times `model.saliency` alone (the extra forward/backward
PuzzleMix and Co-Mixup pay) in a `tf.function`, to attribute their cost.

TensorFlow backend only (the references are TF-side preprocessing layers):

    KERAS_BACKEND=tensorflow python -m benchmarks.bench_mixers
    KERAS_BACKEND=tensorflow python -m benchmarks.bench_mixers --sizes=32 \
        --train_rounds=0 --out=runs/bench/mixers_32.json

keras-cv is optional (`pip install keras-cv --no-deps` plus `regex`); when it
does not import, its rows say "unavailable" with the exception text.
"""

import math
import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["32", "224"], "Image sizes for the throughput part.")
flags.DEFINE_integer("batch_size", 128, "Batch size (both parts).")
flags.DEFINE_integer("num_batches", 3, "Distinct pre-built batches cycled through.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds, throughput part.")
flags.DEFINE_integer("calls", 3, "Minimum calls per mixer per round, throughput part.")
flags.DEFINE_float("min_round_seconds", 0.25,
                   "Fast mixers get more calls per round, enough to fill this time.")
flags.DEFINE_float("alpha", None, "Beta(alpha, alpha) for every mixer that takes one "
                   "(default: each mixer's default_alpha; a reference gets the alpha of the "
                   "mixer it is compared with).")
flags.DEFINE_list("train_methods", None,
                  "Training-step part: 'vanilla' first, then mixer names (default: vanilla "
                  "and every registered mixer).")
flags.DEFINE_integer("train_image_size", 32, "Image size, training-step part.")
flags.DEFINE_integer("width", 16, "ResNet-18 base width, training-step part.")
flags.DEFINE_integer("train_rounds", 7, "Interleaved rounds, training part (0 skips it).")
flags.DEFINE_integer("train_steps", 3, "Steps per model per round, training part.")
flags.DEFINE_string("out", "runs/bench/mixers.json", "JSON output.")

# Part (a) times every registered mixer that mixes images (not ManifoldMix's
# hidden features); the three with a Keras / keras-cv equivalent get a
# `time_vs_ref` column against it.
REFERENCE_OF = {"mixup": "keras.MixUp", "cutmix": "keras.CutMix", "fmix": "keras_cv.FourierMix"}


def _import_keras_cv():
    """Returns (keras_cv module or None, error text or None)."""
    try:
        import keras_cv

        return keras_cv, None
    except Exception as e:  # any import failure is a result to report
        return None, f"{type(e).__name__}: {e}"


def alpha_of(name, alpha=None):
    """`alpha`, or (None) the registered mixer's `default_alpha`."""
    from keras_amix import mixers

    return mixers.get_class(name).default_alpha if alpha is None else alpha


def build_mixers(alpha=None):
    """{label: (tf.function(images, labels, saliency) -> images, error or None)}.

    keras-cv entries carry no function, only the error text, when keras-cv
    does not import (or a layer cannot be built). `alpha` None: each of ours
    at its `default_alpha`, each reference at the α of the mixer it is
    compared with.
    """
    import keras
    import tensorflow as tf

    from keras_amix import mixers

    entries = {}
    wrap = tf.function

    for name in mixers.available():
        if mixers.get_class(name).mixes_hidden:
            continue
        kwargs = dict(alpha=alpha_of(name, alpha), seed=0)
        if name in ("puzzlemix", "comixup"):
            kwargs["grid_size"] = 4
        mixer = mixers.get(name, **kwargs)
        if mixer.requires_saliency:
            call = (lambda m: lambda x, y, s: m(x, y, training=True, saliency=s)[0])(mixer)
        else:
            call = (lambda m: lambda x, y, s: m(x, y, training=True)[0])(mixer)
        entries[f"ours.{name}"] = (wrap(call), None)

    def dict_layer(layer):
        return lambda x, y, s: layer({"images": x, "labels": y}, training=True)["images"]

    mixup, cutmix, fmix = (alpha_of(n, alpha) for n in ("mixup", "cutmix", "fmix"))
    entries["keras.MixUp"] = (wrap(dict_layer(keras.layers.MixUp(alpha=mixup, seed=0))), None)
    entries["keras.CutMix"] = (wrap(dict_layer(keras.layers.CutMix(factor=cutmix, seed=0))), None)
    keras_cv, error = _import_keras_cv()
    for label, ctor in (("keras_cv.MixUp", lambda m: m.layers.MixUp(alpha=mixup, seed=0)),
                        ("keras_cv.CutMix", lambda m: m.layers.CutMix(alpha=cutmix, seed=0)),
                        ("keras_cv.FourierMix",
                         lambda m: m.layers.FourierMix(alpha=fmix, decay_power=3, seed=0))):
        if keras_cv is None:
            entries[label] = (None, error)
            continue
        try:
            fn = wrap(dict_layer(ctor(keras_cv)))
        except Exception as e:
            entries[label] = (None, f"{type(e).__name__}: {e}")
            continue
        entries[label] = (fn, None)
    return entries


def make_batches(size, count, batch_size, classes=10, seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed + size)
    batches = []
    for _ in range(count):
        x = rng.random((batch_size, size, size, 3), dtype=np.float32)
        y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch_size)]
        s = np.abs(rng.normal(size=(batch_size, size, size, 1))).astype(np.float32)
        batches.append(tuple(tf.constant(v) for v in (x, y, s)))
    return batches


def time_throughput(size):
    """Rows of part (a) for one image size."""
    entries = build_mixers(FLAGS.alpha)
    batches = make_batches(size, FLAGS.num_batches, FLAGS.batch_size)
    errors = {k: e for k, (fn, e) in entries.items() if fn is None}
    live = {k: fn for k, (fn, e) in entries.items() if fn is not None}
    for label, fn in list(live.items()):  # trace + warm up; a failure is a result
        try:
            for x, y, s in batches:
                fn(x, y, s).numpy()
        except Exception as e:
            errors[label] = f"{type(e).__name__}: {str(e)[:300]}"
            del live[label]
    traces = {k: fn.experimental_get_tracing_count() for k, fn in live.items()}
    # Calls per round: at least --calls, and enough for --min_round_seconds, so
    # that millisecond mixers are not timed by a handful of noisy calls.
    counts = {}
    for label, fn in live.items():
        start = time.perf_counter()
        for x, y, s in batches:
            fn(x, y, s).numpy()
        per_call = (time.perf_counter() - start) / len(batches)
        counts[label] = max(FLAGS.calls, math.ceil(FLAGS.min_round_seconds / per_call))
    times = {k: [] for k in live}
    step = 0
    for _ in range(FLAGS.rounds):
        for label, fn in live.items():
            start = time.perf_counter()
            for _ in range(counts[label]):
                x, y, s = batches[step % len(batches)]
                step += 1
                fn(x, y, s).numpy()  # blocks until the mixed batch exists
            times[label].append((time.perf_counter() - start) / counts[label])
    for label, fn in live.items():
        if fn.experimental_get_tracing_count() != traces[label]:
            raise RuntimeError(f"{label} retraced while being timed.")
    medians = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for label in entries:
        row = dict(size=size, mixer=label)
        if label in errors:
            row.update(ms_per_batch=None, img_per_s=None, time_vs_ref=None,
                       status="unavailable: " + errors[label])
        else:
            t = medians[label]
            ref = REFERENCE_OF.get(label.split(".", 1)[1]) if label.startswith("ours.") else None
            row.update(ms_per_batch=1000 * t, img_per_s=FLAGS.batch_size / t,
                       calls_per_round=counts[label],
                       time_vs_ref=(t / medians[ref]) if ref in medians else None,
                       reference=ref, status="ok")
        rows.append(row)
    return rows, times


def time_training():
    """Rows of part (b): train_on_batch time per method relative to vanilla."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_amix import backbones, models

    size, batch, classes = FLAGS.train_image_size, FLAGS.batch_size, 10
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 3)).astype("float32")
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, batch)]

    from keras_amix import mixers

    methods = FLAGS.train_methods or ["vanilla"] + mixers.available()

    def build(method):
        backbone = backbones.resnet(18, width=FLAGS.width, input_shape=(size, size, 3))
        mixer = None if method == "vanilla" else method
        model = models.MixupClassifier(backbone, classes, mixer=mixer)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        return model

    built = {m: build(m) for m in methods}
    calls = {m: (lambda mod: lambda: mod.train_on_batch(x, y))(mod) for m, mod in built.items()}
    # The extra forward/backward of PuzzleMix / Co-Mixup, alone.
    probe = built["vanilla"]
    saliency_fn = tf.function(probe.saliency, autograph=False)
    xt, yt = tf.constant(x), tf.constant(y)
    calls["(saliency pass)"] = lambda: saliency_fn(xt, yt).numpy()
    for fn in calls.values():  # compile and warm up
        for _ in range(2):
            fn()
    times = {m: [] for m in calls}
    for _ in range(FLAGS.train_rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(FLAGS.train_steps):
                fn()
            times[name].append((time.perf_counter() - start) / FLAGS.train_steps)
    base = statistics.median(times[methods[0]])
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        rows.append(dict(method=name, step_ms=1000 * median, img_per_s=batch / median,
                         ratio_to_vanilla=median / base))
    return rows, times


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from keras_amix import mixers

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "bench_mixers compares against TF-side preprocessing layers; run it with "
            f"KERAS_BACKEND=tensorflow (the backend is {keras.backend.backend()!r})."
        )
    wall = time.perf_counter()
    load_before = os.getloadavg()
    throughput_rows, throughput_raw = [], {}
    for size in (int(s) for s in FLAGS.sizes):
        rows, raw = time_throughput(size)
        throughput_rows += rows
        throughput_raw[size] = raw
        print(f"\n(a) mixer throughput, {size}x{size}, batch {FLAGS.batch_size}, "
              f"tf.function, median of {FLAGS.rounds} rounds (>= {FLAGS.calls} calls and "
              f">= {FLAGS.min_round_seconds} s per mixer per round)")
        common.print_table(rows, ["size", "mixer", "ms_per_batch", "img_per_s",
                                  "time_vs_ref", "calls_per_round", "status"])
    train_rows, train_raw = [], {}
    if FLAGS.train_rounds > 0:
        train_rows, train_raw = time_training()
        print(f"\n(b) train_on_batch, ResNet-18 width {FLAGS.width}, "
              f"{FLAGS.train_image_size}x{FLAGS.train_image_size}, batch {FLAGS.batch_size}, "
              f"median of {FLAGS.train_rounds} rounds x {FLAGS.train_steps} steps")
        common.print_table(train_rows, ["method", "step_ms", "img_per_s", "ratio_to_vanilla"])
    wall = time.perf_counter() - wall
    print(f"\nwall time {wall:.1f} s; load average before {load_before}, "
          f"after {os.getloadavg()}")
    common.write_json(FLAGS.out, dict(
        machine=common.machine(), batch_size=FLAGS.batch_size,
        alpha={name: alpha_of(name, FLAGS.alpha) for name in mixers.available()},
        sizes=[int(s) for s in FLAGS.sizes], rounds=FLAGS.rounds, calls=FLAGS.calls,
        num_batches=FLAGS.num_batches, throughput=throughput_rows,
        throughput_raw_seconds=throughput_raw, train_image_size=FLAGS.train_image_size,
        width=FLAGS.width, train_rounds=FLAGS.train_rounds, train_steps=FLAGS.train_steps,
        training=train_rows, training_raw_seconds=train_raw, wall_seconds=wall,
        load_average_before=load_before, load_average_after=os.getloadavg()))


if __name__ == "__main__":
    app.run(main)
