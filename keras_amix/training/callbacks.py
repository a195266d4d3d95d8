"""Training callbacks: TensorBoard pictures of the masks a Mix Block predicts, epoch timing,
a backup that is never half-written, and a stop on non-finite losses.

`mix_panels` and `mix_grid` are pure functions of a model and a batch (the
callback and `experiments/visualize_amix.py` share them); `MixImageSummary`
writes `mix_grid` to TensorBoard during `fit`. TensorFlow is imported inside
the methods that write summaries, so this module imports under every backend.
"""

import json
import math
import numbers
import os
import time

import keras
import numpy as np


# Pixels of white space between the tiles of `mix_grid`.
GRID_PAD = 2


# --------------------------------------------------------------- validation
def _check_images(images, name="images"):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty NHWC batch (B >= 1, H, W, C); "
            f"received shape {images.shape}."
        )
    if images.shape[-1] not in (1, 3):
        raise ValueError(
            f"`{name}` must have 1 or 3 channels; received shape {images.shape}."
        )
    return images.astype("float32")


def _check_lams(lams):
    if isinstance(lams, numbers.Real):
        lams = (lams,)
    lams = tuple(lams) if lams is not None else ()
    if not lams:
        raise ValueError(f"`lams` must hold at least one λ in [0, 1]; received {lams!r}.")
    for lam in lams:
        if not isinstance(lam, numbers.Real) or not 0.0 <= float(lam) <= 1.0:
            raise ValueError(
                f"Every λ in `lams` must be a number in [0, 1]; received lams={lams!r}."
            )
    return tuple(float(lam) for lam in lams)


def _check_perm(perm, batch):
    if perm is None:
        return np.roll(np.arange(batch), -1)  # i is mixed with i + 1
    perm = np.asarray(perm)
    if perm.shape != (batch,) or sorted(perm.tolist()) != list(range(batch)):
        raise ValueError(
            f"`perm` must be a permutation of 0..{batch - 1} (one entry per image); "
            f"received perm={perm.tolist()!r}."
        )
    return perm.astype("int64")


def _check_stats(value, name, channels):
    if value is None:
        return None
    value = np.asarray(value, "float32").reshape(-1)
    if value.size not in (1, channels):
        raise ValueError(
            f"`{name}` must be a scalar or hold one value per channel ({channels}); "
            f"received {name}={value.tolist()!r}."
        )
    if name == "std" and np.any(value <= 0):
        raise ValueError(f"`std` must be > 0; received std={value.tolist()!r}.")
    return value


def check_mix_model(model):
    """Raises ValueError unless `model` draws its Mix Block's masks (`mask_panels`:
    `keras_amix.models.AMixClassifier`, `AMixSSL`)."""
    if not callable(getattr(model, "mask_panels", None)):
        raise ValueError(
            "`model` must have a Mix Block and a `mask_panels(images, lams, perm)` method "
            f"(an AMixClassifier or AMixSSL); received a {type(model).__name__}: {model!r}."
        )
    return model


def random_derangement(batch, seed=0):
    """A fixed permutation of 0..batch-1 with no fixed point (one cycle).

    Uses a local `np.random.default_rng(seed)`, never the global state.
    """
    if not isinstance(batch, int) or batch < 2:
        raise ValueError(
            f"`batch` must be an int >= 2 to pair distinct images; received {batch!r}."
        )
    order = np.random.default_rng(seed).permutation(batch)
    perm = np.empty(batch, "int64")
    perm[order] = np.roll(order, -1)
    return perm


# ------------------------------------------------------------ pure helpers
def mix_panels(model, images, lams=(0.3, 0.5, 0.7), perm=None):
    """Masks and mixed images of a Mix Block in inference mode.

    Checks the inputs and asks the model (`model.mask_panels`): the Mix
    Block reads the stage features of the momentum (AMix) or key (AMix-I/C)
    encoder for `images` and the paired `images[perm]` and gives the mask s_λ
    (the weight of image a) at each λ of `lams`; x_mix = s_λ ⊙ x_a + (1 −
    s_λ) ⊙ x_perm(a) (DESIGN §4).

    Args:
        model: an `AMixClassifier` or `AMixSSL` (anything with `mask_panels`).
        images: (B, H, W, C) normalised images, as the model sees them.
        lams: λ values in [0, 1].
        perm: the pairing, a permutation of 0..B-1 (None: i pairs i + 1).

    Returns:
        `(masks, mixed, perm)`: float32 numpy arrays of shape
        (L, B, H, W, 1) and (L, B, H, W, C) (L = len(lams)) and the int perm.
    """
    check_mix_model(model)
    images = _check_images(images)
    lams = _check_lams(lams)
    perm = _check_perm(perm, images.shape[0])
    masks, mixed = model.mask_panels(images, lams, perm)
    return masks, mixed, perm


def denormalize(images, mean=None, std=None):
    """Normalised images -> uint8 RGB: x * std + mean in [0, 1], times 255.

    `mean` / `std` are per-channel in [0, 1] units (`keras_amix.data.info`);
    None skips that part (images already in [0, 1]). Grey images become RGB.
    """
    images = np.asarray(images, "float32")
    channels = images.shape[-1]
    std = _check_stats(std, "std", channels)
    mean = _check_stats(mean, "mean", channels)
    if std is not None:
        images = images * std
    if mean is not None:
        images = images + mean
    images = np.clip(np.round(np.clip(images, 0.0, 1.0) * 255.0), 0, 255).astype("uint8")
    if channels == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def mask_to_rgb(masks):
    """Masks in [0, 1] of shape (..., 1) -> grey uint8 RGB."""
    masks = np.clip(np.asarray(masks, "float32"), 0.0, 1.0)
    return np.repeat(np.round(masks * 255.0).astype("uint8"), 3, axis=-1)


def grid_tile(grid, row, col, tile_size, pad=GRID_PAD):
    """The (row, col) tile of a `mix_grid` image (tile_size = (H, W))."""
    h, w = tile_size
    top, left = pad + row * (h + pad), pad + col * (w + pad)
    return grid[top:top + h, left:left + w]


def mix_grid(model, images, lams=(0.3, 0.5, 0.7), perm=None, mean=None, std=None):
    """A Fig.-4 style picture of the masks a Mix Block predicts, as uint8 RGB.

    Rows are the pairs (i, perm[i]); columns are x_a, x_b, then for each λ of
    `lams` the mask s_λ (grey, white = all of x_a) and the mixed image.
    Tiles are separated by `GRID_PAD` white pixels (see `grid_tile`).

    Args:
        model: an `AMixClassifier` or any model with `mix_block`,
            `momentum_backbone` and `feature_stage`.
        images: (B, H, W, C) normalised images, as the model sees them.
        lams: λ values in [0, 1].
        perm: the pairing, a permutation of 0..B-1 (None: i pairs i + 1).
        mean, std: per-channel normalisation statistics in [0, 1] units, to
            undo before display (None: images are in [0, 1]).

    Returns:
        uint8 numpy array of shape
        (pad + B (H + pad), pad + (2 + 2L)(W + pad), 3).

    Example:

    ```python
    info = keras_amix.data.info("digits")
    grid = mix_grid(model, x_val[:6], lams=(0.3, 0.5, 0.7),
                    perm=random_derangement(6), mean=info.mean, std=info.std)
    ```
    """
    masks, mixed, perm = mix_panels(model, images, lams, perm)
    images = np.asarray(images, "float32")
    x_a = denormalize(images, mean, std)
    columns = [x_a, x_a[perm]]
    for mask, mix in zip(masks, mixed):
        columns += [mask_to_rgb(mask), denormalize(mix, mean, std)]
    batch, h, w = images.shape[:3]
    grid = np.full((GRID_PAD + batch * (h + GRID_PAD),
                    GRID_PAD + len(columns) * (w + GRID_PAD), 3), 255, "uint8")
    for col, tiles in enumerate(columns):
        for row in range(batch):
            grid_tile(grid, row, col, (h, w))[...] = tiles[row]
    return grid


# ---------------------------------------------------------------- callback
class MixImageSummary(keras.callbacks.Callback):
    """Writes the Mix Block's masks on a fixed batch to TensorBoard.

    Every `every_n_epochs` epochs, `mix_grid` of the model (momentum encoder
    features and Mix Block in inference mode, `training=False`) on `images`
    with a fixed pairing goes to `log_dir` as an image summary named `name`
    at step = epoch + 1 (the number of finished epochs). The trivial
    solution of the AutoMix block (constant masks) shows as flat grey tiles.

    Args:
        log_dir: TensorBoard folder (e.g. `workdir/tensorboard/masks`).
        images: (B, H, W, C) numpy batch of *normalised* validation images,
            B >= 2.
        mean, std: per-channel statistics (in [0, 1] units) that normalised
            `images`; used to show them (None: images are in [0, 1]).
        lams: λ values in [0, 1] (default 0.3, 0.5, 0.7).
        perm: the pairing (a permutation of 0..B-1); None draws a fixed
            permutation without fixed points from `seed`.
        seed: int seed of that permutation.
        every_n_epochs: int >= 1.
        name: summary tag.

    Example:

    ```python
    info = keras_amix.data.info("digits")
    x_val = next(iter(test_ds))[0].numpy()[:6]
    model.fit(train_ds, epochs=15, callbacks=[
        MixImageSummary("runs/x/tensorboard/masks", x_val, info.mean, info.std)])
    ```

    Reference: AMix paper Fig. 4 (mixed samples of AutoMix and AMix).
    """

    def __init__(self, log_dir, images, mean=None, std=None, lams=(0.3, 0.5, 0.7),
                 perm=None, seed=0, every_n_epochs=1, name="amix_masks"):
        super().__init__()
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`log_dir` must be a non-empty path; received log_dir={log_dir!r}.")
        images = _check_images(images)
        if images.shape[0] < 2:
            raise ValueError(
                "`images` must hold at least 2 images to form pairs; "
                f"received shape {images.shape}."
            )
        if (not isinstance(every_n_epochs, int) or isinstance(every_n_epochs, bool)
                or every_n_epochs < 1):
            raise ValueError(f"`every_n_epochs` must be an int >= 1; received {every_n_epochs!r}.")
        self.log_dir = log_dir
        self.images = images
        self.mean = _check_stats(mean, "mean", images.shape[-1])
        self.std = _check_stats(std, "std", images.shape[-1])
        self.lams = _check_lams(lams)
        self.seed = seed
        self.perm = (random_derangement(images.shape[0], seed) if perm is None
                     else _check_perm(perm, images.shape[0]))
        self.every_n_epochs = every_n_epochs
        self.name = name
        self._writer = None

    def on_train_begin(self, logs=None):
        check_mix_model(self.model)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        self.write(step=epoch + 1)

    def write(self, step):
        """Writes one grid of the current model at `step`; returns the grid."""
        import tensorflow as tf  # TensorFlow only: TensorBoard's event writer, as Keras' own

        grid = mix_grid(self.model, self.images, self.lams, self.perm, self.mean, self.std)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        lams = ", ".join(f"{lam:g}" for lam in self.lams)
        with self._writer.as_default():
            tf.summary.image(
                self.name, grid[None], step=step,
                description=("Rows: pairs (a, perm(a)). Columns: x_a, x_b, then per λ in "
                             f"({lams}) the mask s_λ (white = x_a) and the mixed image."),
            )
        self._writer.flush()
        return grid

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EpochTimer(keras.callbacks.Callback):
    """Records the training wall time of every epoch in `self.seconds`: the
    epoch less its validation pass (`fit(validation_data=...)`), so epochs with
    and without an evaluation (`validation_freq`) compare.

    With `path`, each epoch's time is also written to that JSON file
    (`{"epoch index": seconds}`, atomically, at the end of the epoch) and the
    file's earlier entries are read at the start, so `run_seconds` holds every
    epoch of a run that was killed and resumed in another process (an epoch
    redone after a kill keeps its last time).

    Example:

    ```python
    timer = EpochTimer()
    model.fit(train, epochs=10, validation_data=test, callbacks=[timer])
    timer.seconds  # [s_epoch_1, ..., s_epoch_10], evaluation excluded
    ```
    """

    def __init__(self, path=None):
        super().__init__()
        self.path = path
        self.seconds = []
        self._by_epoch = {}
        if path is not None and os.path.exists(path):
            with open(path) as f:
                self._by_epoch = {int(epoch): float(s) for epoch, s in json.load(f).items()}
        self._start = None
        self._test_start = None
        self._testing = 0.0

    @property
    def run_seconds(self):
        """Every epoch's time in epoch order: earlier processes' (from `path`)
        and this one's."""
        return [self._by_epoch[epoch] for epoch in sorted(self._by_epoch)]

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._testing = 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._start is not None and self._test_start is not None:
            self._testing += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start - self._testing
        self.seconds.append(seconds)
        self._by_epoch[int(epoch)] = seconds
        if self.path is not None:
            _write_json_atomic(self.path, {str(e): s for e, s in sorted(self._by_epoch.items())})


# ------------------------------------------------------- non-finite values
def first_non_finite_variable(model):
    """The path of the first float variable of `model` holding a NaN or an
    infinity, or None when every value is finite."""
    for variable in model.variables:
        if not keras.backend.is_float_dtype(variable.dtype):
            continue  # step counters, seed-generator states
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable.value))):
            return getattr(variable, "path", variable.name)
    return None


def check_finite_weights(model, what):
    """Raises ValueError naming the first variable of `model` that is not
    finite; `what` says what was about to be written (e.g. "the SavedModel")."""
    bad = first_non_finite_variable(model)
    if bad is not None:
        raise ValueError(
            f"Refusing to write {what}: variable {bad!r} of model {model.name!r} holds "
            "NaN or infinite values (training diverged)."
        )


class TerminateOnNonFinite(keras.callbacks.Callback):
    """Raises `FloatingPointError` at the first batch whose logged loss terms
    (every key the model logs: `loss`, `loss_theta`, `loss_nce`, ...) are NaN
    or infinite, naming the epoch, the batch and the terms.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (and a
    backup of the diverged weights be written), it raises inside the batch;
    at the end of an epoch it checks the epoch logs (validation included).
    Put it before `BackupAndRestore` so that the last backup stays the last
    finite one.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    @staticmethod
    def _non_finite(logs):
        bad = {}
        for name, value in (logs or {}).items():
            try:
                value = float(np.asarray(value))
            except (TypeError, ValueError):
                continue  # not a scalar: nothing to check
            if not math.isfinite(value):
                bad[name] = value
        return bad

    def _raise(self, bad, where):
        terms = ", ".join(f"{name}={value}" for name, value in sorted(bad.items()))
        raise FloatingPointError(
            f"Non-finite training logs at {where}: {terms}. Training stopped; the "
            "backup of the last finished epoch is kept (lower the learning rate or check "
            "the mixing parameters, e.g. --alpha)."
        )

    def on_train_batch_end(self, batch, logs=None):
        bad = self._non_finite(logs)
        if bad:
            self._raise(bad, f"epoch {self._epoch + 1}, batch {batch + 1} (1-based)")

    def on_epoch_end(self, epoch, logs=None):
        bad = self._non_finite(logs)
        if bad:
            self._raise(bad, f"the end of epoch {epoch + 1} (1-based)")


# ------------------------------------------------------------------ backup
BACKUP_METADATA = "training_metadata.json"


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_json_atomic(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def backup_state(backup_dir):
    """The metadata of the backup in `backup_dir` (`{"epoch": finished epochs,
    "weights": file name, ...}`), or None when there is none."""
    path = os.path.join(backup_dir, BACKUP_METADATA)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        state = json.load(f)
    state.setdefault("weights", "latest.weights.h5")  # Keras' own layout
    return state


def backup_epoch(backup_dir):
    """The epoch a `fit` restored from `backup_dir` starts at (0: no backup)."""
    state = backup_state(backup_dir)
    return 0 if state is None else int(state["epoch"])


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup is never half-written.

    Keras writes `latest.weights.h5` in place and then the metadata: a kill
    during the write leaves a truncated file that every restart fails to open
    (its `double_checkpoint` copies files in place too, and a kill between
    the weights and the metadata pairs new weights with the old epoch).
    Here each save writes the weights to a new file under a temporary name,
    fsyncs and renames it to `epoch-<e>-batch-<b>.weights.h5`, then replaces
    `training_metadata.json` (epoch, batch, file name) atomically, and only
    then removes the previous weights. At every instant the metadata names a
    complete weights file of the same step.

    Saving refuses non-finite weights (ValueError naming the variable), so
    the last backup is the last finite state. Arguments are Keras' own;
    `backup_epoch(backup_dir)` reads the epoch a resumed `fit` starts at.
    """

    def on_train_begin(self, logs=None):
        self._remove_stale(keep=None)
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, the model must be built before "
                f"`fit()`; model {self.model.name!r} is unbuilt."
            )
        state = backup_state(self.backup_dir)
        if state is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, state["weights"]))
        self.model._initial_epoch = int(state["epoch"])

    def _save_model(self):
        check_finite_weights(self.model, "the backup")
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{self._current_epoch}-batch-{self._last_batch_seen}.weights.h5"
        tmp = os.path.join(self.backup_dir, f".tmp-{name}")
        self.model.save_weights(tmp, overwrite=True)
        _fsync(tmp)
        os.replace(tmp, os.path.join(self.backup_dir, name))
        _write_json_atomic(os.path.join(self.backup_dir, BACKUP_METADATA), dict(
            epoch=self._current_epoch, batch=self._last_batch_seen, weights=name))
        self._remove_stale(keep=name)

    def _remove_stale(self, keep):
        """Removes temporary files and every weights file but `keep`
        (None: the one the metadata names)."""
        if not os.path.isdir(self.backup_dir):
            return
        if keep is None:
            state = backup_state(self.backup_dir)
            keep = state and state["weights"]
        for name in os.listdir(self.backup_dir):
            if name != BACKUP_METADATA and name != keep:
                os.remove(os.path.join(self.backup_dir, name))


class InitializeClusters(keras.callbacks.Callback):
    """Runs `model.initialize_clusters(batches)` when `fit` begins.

    Place it after `keras.callbacks.BackupAndRestore` in the callback list:
    the backup's restore runs first, so a resumed run keeps the clusters it
    had and the k-means start runs only on a fresh memory. `batches` is an
    iterable of `(images, ids)` over the whole training set (e.g. the centre
    view of every image), re-iterated only if the memory is empty.

    Example:

    ```python
    model.fit(ds, callbacks=[backup, InitializeClusters(first_pass)])
    ```
    """

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_train_begin(self, logs=None):
        if self.model.initialize_clusters(self.batches):
            print("ODC: clusters initialised by k-means on the first pass.")
