r"""Accuracy comparison of supervised mixup methods on one fixed budget.

Trains each method with the same schedule on arrays from an .npz file
(`x_train`, `y_train`, `x_test`, `y_test`, uint8 images, int labels) and
reports the final and the median top-1 of the last 10 epochs (the paper's
report), plus seconds per epoch. It needs no TensorFlow: augmentation (flip +
4-pixel reflect-pad crop, DESIGN §10) runs in NumPy inside a
`keras.utils.PyDataset`, so it runs on any backend and on machines without
tf.data (e.g. a GPU host with only JAX). Results are written to JSON after
every method, so a run cut short keeps what it finished.

Make the calibrated CIFAR-10 budget of DESIGN §12 (first 500 images per class,
full test set) with `python -m benchmarks.make_cifar_npz`, then:

    KERAS_BACKEND=jax python -m benchmarks.compare_methods --data=runs/cifar10_5k.npz \
        --methods=vanilla,mixup,cutmix,automix,amix --epochs=100
"""

import statistics

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, ".npz with x_train, y_train, x_test, y_test.")
flags.DEFINE_list("methods", ["vanilla", "mixup", "cutmix", "automix", "amix"], "Methods.")
flags.DEFINE_list("seeds", ["0"], "Seeds; each method runs once per seed.")
flags.DEFINE_integer("epochs", 100, "Epochs.")
flags.DEFINE_integer("batch_size", 100, "Batch size.")
flags.DEFINE_integer("width", 16, "ResNet-18 base width.")
flags.DEFINE_float("lr", 0.1, "Peak learning rate (cosine to 0).")
flags.DEFINE_float("weight_decay", 5e-4, "Weight decay.")
flags.DEFINE_string("out", "runs/bench/compare_methods.json", "JSON output.")
flags.mark_flag_as_required("data")

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def normalise(x):
    import numpy as np

    return ((x.astype("float32") / 255.0 - np.float32(MEAN)) / np.float32(STD)).astype("float32")


def make_train_data(x, y, batch_size, seed):
    import keras
    import numpy as np

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return len(x) // batch_size

        def __getitem__(self, i):
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            xb = x[idx]
            flip = self.rng.random(len(idx)) < 0.5
            xb = np.where(flip[:, None, None, None], xb[:, :, ::-1], xb)
            padded = np.pad(xb, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
            dy, dx = self.rng.integers(0, 9, (2, len(idx)))
            rows = dy[:, None] + np.arange(32)[None]
            cols = dx[:, None] + np.arange(32)[None]
            xb = padded[np.arange(len(idx))[:, None, None], rows[:, :, None], cols[:, None, :]]
            return xb, y[idx]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return Batches()


def build(method, steps_total, seed):
    import keras

    from keras_amix import backbones, models

    backbone = backbones.resnet(18, width=FLAGS.width, input_shape=(32, 32, 3))
    if method == "vanilla":
        model = models.MixupClassifier(backbone, 10)
    elif method in ("automix", "amix"):
        # α: AMixClassifier's default (the paper's 2.0).
        model = models.AMixClassifier(backbone, 10, mix_block=method,
                                      total_steps=steps_total, seed=seed)
    else:  # α: the mixer's `default_alpha`
        model = models.MixupClassifier(backbone, 10, mixer=method, mixer_kwargs=dict(seed=seed))
    schedule = keras.optimizers.schedules.CosineDecay(FLAGS.lr, decay_steps=steps_total)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9,
                                                 weight_decay=FLAGS.weight_decay))
    return model


def main(argv):
    del argv
    import keras
    import numpy as np

    from keras_amix.training.callbacks import EpochTimer

    arrays = np.load(FLAGS.data)
    x_train, x_test = normalise(arrays["x_train"]), normalise(arrays["x_test"])
    y_train = keras.utils.to_categorical(arrays["y_train"], 10).astype("float32")
    y_test = keras.utils.to_categorical(arrays["y_test"], 10).astype("float32")
    steps = len(x_train) // FLAGS.batch_size
    results = []
    for seed in [int(s) for s in FLAGS.seeds]:
        for method in FLAGS.methods:
            keras.utils.set_random_seed(seed)
            model = build(method, steps * FLAGS.epochs, seed)
            timer = EpochTimer()
            history = model.fit(make_train_data(x_train, y_train, FLAGS.batch_size, seed),
                                validation_data=(x_test, y_test), validation_batch_size=1000,
                                epochs=FLAGS.epochs, callbacks=[timer], verbose=0).history
            top1 = history["val_top1"]
            mixer = getattr(model, "mixer", None)
            alpha = getattr(model, "alpha", None) if mixer is None else mixer.alpha
            row = dict(method=method, seed=seed, alpha=alpha, final_top1=top1[-1],
                       median_last10_top1=statistics.median(top1[-10:]),
                       sec_per_epoch=statistics.median(timer.seconds[1:] or timer.seconds))
            if "val_top1_momentum" in history:
                row["median_last10_top1_momentum"] = statistics.median(
                    history["val_top1_momentum"][-10:])
                row["final_mask_std"] = history["mask_std"][-1]
            results.append(dict(row, history={k: [float(v) for v in vals]
                                              for k, vals in history.items()}))
            common.print_table([row], list(row))
            common.write_json(FLAGS.out, dict(
                machine=common.machine(), data=FLAGS.data, epochs=FLAGS.epochs,
                batch_size=FLAGS.batch_size, width=FLAGS.width, lr=FLAGS.lr,
                weight_decay=FLAGS.weight_decay, train_size=len(x_train),
                test_size=len(x_test), results=results))
    common.print_table([{k: v for k, v in r.items() if k != "history"} for r in results],
                       ["method", "seed", "alpha", "final_top1", "median_last10_top1",
                        "median_last10_top1_momentum", "final_mask_std", "sec_per_epoch"])


if __name__ == "__main__":
    app.run(main)
