"""mix_panels / mix_grid (Fig.-4 pictures of Mix Block masks), MixImageSummary, EpochTimer,
the atomic backup and the stop on non-finite losses."""

import functools
import glob
import json
import os
import types

import keras
import numpy as np
import pytest

from keras_amix import backbones, models
from keras_amix.layers import MixBlock
from keras_amix.training import callbacks as cb

SIZE = 16


def _images(n=4, size=SIZE, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def _amix(classes=3):
    backbone = backbones.resnet(18, width=8, input_shape=(SIZE, SIZE, 3))
    return models.AMixClassifier(backbone, classes, mix_block="amix", seed=1)


class _FakeBlock:
    """Stands in for a MixBlock: returns `mask_fn(z_a, z_b, lam)` and records the call."""

    def __init__(self, mask_fn):
        self.mask_fn = mask_fn
        self.calls = []

    def __call__(self, z_a, z_b, lam, image_size=None, training=None):
        z_a, z_b = keras.ops.convert_to_numpy(z_a), keras.ops.convert_to_numpy(z_b)
        self.calls.append(dict(z_a=z_a, z_b=z_b, lam=lam, image_size=image_size,
                               training=training))
        return self.mask_fn(z_a, z_b, lam, image_size)


    # The real layer's picture code around the fake mask.
    mask_panels = MixBlock.mask_panels


def _fake_model(mask_fn, feature_stage="stage2", phi_lam_adjust=False):
    """A stand-in AMixClassifier: its own `mask_panels` over a fake Mix Block."""
    backbone = backbones.resnet(18, width=8, input_shape=(SIZE, SIZE, 3))
    model = types.SimpleNamespace(mix_block=_FakeBlock(mask_fn), momentum_backbone=backbone,
                                  feature_stage=feature_stage, phi_lam_adjust=phi_lam_adjust)
    model.mask_panels = functools.partial(models.AMixClassifier.mask_panels, model)
    return model


def _constant(value):
    def mask_fn(z_a, z_b, lam, image_size):
        return np.full((z_a.shape[0], *image_size, 1), value, "float32")
    return mask_fn


# ------------------------------------------------------------------ layout
def test_grid_shape_dtype_and_source_columns():
    model = _amix()
    x = _images(4)
    perm = np.array([2, 0, 3, 1])
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    grid = cb.mix_grid(model, x, lams=(0.3, 0.7), perm=perm, mean=mean, std=std)
    pad, cols = cb.GRID_PAD, 2 + 2 * 2
    assert grid.dtype == np.uint8
    assert grid.shape == (pad + 4 * (SIZE + pad), pad + cols * (SIZE + pad), 3)
    # x_a and x_b columns: the de-normalised sources, by hand.
    by_hand = np.clip(np.round(np.clip(x * np.array(std) + np.array(mean), 0, 1) * 255), 0, 255)
    for row in range(4):
        np.testing.assert_array_equal(cb.grid_tile(grid, row, 0, (SIZE, SIZE)), by_hand[row])
        np.testing.assert_array_equal(cb.grid_tile(grid, row, 1, (SIZE, SIZE)),
                                      by_hand[perm[row]])
    # The separators stay white.
    assert np.all(grid[:pad] == 255) and np.all(grid[:, :pad] == 255)


def test_real_mix_block_masks_are_valid_and_deterministic():
    model = _amix()
    x = _images(4)
    masks, mixed, perm = cb.mix_panels(model, x, lams=(0.3, 0.5), perm=None)
    np.testing.assert_array_equal(perm, [1, 2, 3, 0])
    assert masks.shape == (2, 4, SIZE, SIZE, 1) and mixed.shape == (2, 4, SIZE, SIZE, 3)
    assert np.all((masks >= 0) & (masks <= 1))
    np.testing.assert_allclose(mixed, masks * x + (1 - masks) * x[perm], rtol=1e-6, atol=1e-6)
    again, _, _ = cb.mix_panels(model, x, lams=(0.3, 0.5), perm=None)
    np.testing.assert_array_equal(masks, again)  # inference mode: no dropout, no BN update


# ------------------------------------------------------------ exact mixing
@pytest.mark.parametrize("value,source", [(1.0, "a"), (0.0, "b")])
def test_constant_mask_gives_a_source_image(value, source):
    x = _images(3)
    perm = np.array([2, 0, 1])
    model = _fake_model(_constant(value))
    masks, mixed, _ = cb.mix_panels(model, x, lams=(0.5,), perm=perm)
    expected = x if source == "a" else x[perm]
    np.testing.assert_array_equal(mixed[0], expected)
    grid = cb.mix_grid(model, x, lams=(0.5,), perm=perm)
    for row in range(3):
        np.testing.assert_array_equal(cb.grid_tile(grid, row, 3, (SIZE, SIZE)),
                                      cb.grid_tile(grid, row, 0 if source == "a" else 1,
                                                   (SIZE, SIZE)))
        assert np.all(cb.grid_tile(grid, row, 2, (SIZE, SIZE)) == int(255 * value))


def test_model_that_adjusts_phi_masks_draws_them_adjusted():
    """A mask with 0.9 on the left half and 0.1 on the right (mean 0.5), drawn
    at λ = 0.3 after λ adjusting: s·0.3/0.5 = 0.54 and 0.06 (mean 0.3); at
    λ = 0.7: 1 − (1 − s)·0.3/0.5 = 0.94 and 0.46 (mean 0.7)."""
    def halves(z_a, z_b, lam, image_size):
        mask = np.full((z_a.shape[0], *image_size, 1), 0.1, "float32")
        mask[:, :, : image_size[1] // 2] = 0.9
        return mask

    x = _images(3)
    perm = np.array([2, 0, 1])
    masks, mixed, _ = cb.mix_panels(_fake_model(halves, phi_lam_adjust=True), x,
                                    lams=(0.3, 0.7), perm=perm)
    half = SIZE // 2
    for i, (left, right) in enumerate(((0.54, 0.06), (0.94, 0.46))):
        np.testing.assert_allclose(masks[i, :, :, :half], left, atol=1e-6)
        np.testing.assert_allclose(masks[i, :, :, half:], right, atol=1e-6)
    np.testing.assert_allclose(mixed, masks * x + (1 - masks) * x[perm], rtol=1e-6, atol=1e-6)
    raw, _, _ = cb.mix_panels(_fake_model(halves), x, lams=(0.3,), perm=perm)
    np.testing.assert_allclose(raw[0, :, :, :half], 0.9, atol=1e-6)  # without: the raw mask


def test_half_mask_by_hand():
    # Left half of the mask is 1 (x_a), right half 0.25: 0.25 x_a + 0.75 x_b.
    def mask_fn(z_a, z_b, lam, image_size):
        mask = np.full((z_a.shape[0], *image_size, 1), 0.25, "float32")
        mask[:, :, : image_size[1] // 2] = 1.0
        return mask

    x = np.zeros((2, SIZE, SIZE, 3), "float32")
    x[0], x[1] = 0.8, 0.4
    grid = cb.mix_grid(_fake_model(mask_fn), x, lams=(0.5,), perm=[1, 0])
    mixed = cb.grid_tile(grid, 0, 3, (SIZE, SIZE))
    assert np.all(mixed[:, : SIZE // 2] == 204)  # 0.8 * 255
    assert np.all(mixed[:, SIZE // 2 :] == 128)  # (0.25 * 0.8 + 0.75 * 0.4) * 255 = 127.5
    mask_tile = cb.grid_tile(grid, 1, 2, (SIZE, SIZE))
    assert np.all(mask_tile[:, : SIZE // 2] == 255) and np.all(mask_tile[:, SIZE // 2 :] == 64)


def test_reads_momentum_stage_features_in_inference_mode_with_paired_features():
    x = _images(4)
    perm = np.array([3, 2, 0, 1])
    model = _fake_model(_constant(0.5), feature_stage="stage2")
    cb.mix_panels(model, x, lams=(0.2, 0.9), perm=perm)
    z = keras.ops.convert_to_numpy(
        backbones.run_stages(model.momentum_backbone, x, stop="stage2", training=False))
    calls = model.mix_block.calls
    assert [c["lam"] for c in calls] == [0.2, 0.9]
    for call in calls:
        assert call["training"] is False and call["image_size"] == (SIZE, SIZE)
        np.testing.assert_allclose(call["z_a"], z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(call["z_b"], z[perm], rtol=1e-5, atol=1e-5)


def test_random_derangement_has_no_fixed_point_and_repeats():
    for batch in (2, 3, 7):
        for seed in range(5):
            perm = cb.random_derangement(batch, seed)
            assert sorted(perm.tolist()) == list(range(batch))
            assert np.all(perm != np.arange(batch))
            np.testing.assert_array_equal(perm, cb.random_derangement(batch, seed))


# --------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs,match", [
    (dict(images=np.zeros((0, SIZE, SIZE, 3))), r"`images`.*\(0, 16, 16, 3\)"),
    (dict(images=np.zeros((SIZE, SIZE, 3))), r"`images`.*\(16, 16, 3\)"),
    (dict(lams=(0.5, 1.5)), r"`lams`.*1\.5"),
    (dict(lams=(-0.1,)), r"`lams`.*-0\.1"),
    (dict(lams=()), r"`lams`.*\(\)"),
    (dict(perm=[0, 0, 1, 2]), r"`perm`.*\[0, 0, 1, 2\]"),
    (dict(std=(0.0, 1.0, 1.0)), r"`std`.*0\.0"),
])
def test_mix_grid_rejects_bad_arguments(kwargs, match):
    args = dict(images=_images(4), lams=(0.5,), perm=None, mean=None, std=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cb.mix_grid(_fake_model(_constant(0.5)), **args)


def test_model_without_mix_block_is_rejected():
    classifier = models.MixupClassifier(backbones.resnet(18, width=8), 3)
    with pytest.raises(ValueError, match=r"`model`.*mask_panels.*MixupClassifier"):
        cb.mix_grid(classifier, _images(2), lams=(0.5,))


@pytest.mark.parametrize("kwargs,match", [
    (dict(images=np.zeros((1, SIZE, SIZE, 3))), r"`images`.*at least 2"),
    (dict(every_n_epochs=0), r"`every_n_epochs`.*0"),
    (dict(lams=(2.0,)), r"`lams`.*2\.0"),
    (dict(log_dir=""), r"`log_dir`"),
])
def test_callback_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(log_dir=str(tmp_path), images=_images(4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        cb.MixImageSummary(**args)


# ------------------------------------------------------------------ callback
def _image_summaries(log_dir):
    import tensorflow as tf

    found = []
    for path in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.append((event.step, value))
    return found


def _decode(value):
    import tensorflow as tf

    # tf.summary.image (TF2) stores [width, height, png...] as a string tensor.
    tensor = tf.make_ndarray(value.tensor)
    return tf.io.decode_png(tensor[2]).numpy(), int(tensor[0]), int(tensor[1])


@pytest.mark.backend_independent
def test_write_stores_the_grid_as_an_image_summary(tmp_path):
    model = _amix()
    x = _images(4)
    callback = cb.MixImageSummary(str(tmp_path), x, lams=(0.5,), seed=3, name="masks")
    callback.set_model(model)
    grid = callback.write(step=7)
    callback.on_train_end()
    summaries = _image_summaries(str(tmp_path))
    assert [(step, v.tag) for step, v in summaries] == [(7, "masks")]
    image, width, height = _decode(summaries[0][1])
    assert (height, width) == grid.shape[:2]
    np.testing.assert_array_equal(image, grid)
    assert summaries[0][1].metadata.plugin_data.plugin_name == "images"


@pytest.mark.training
def test_fit_writes_mask_images_every_n_epochs(tmp_path):
    # Runs on tensorflow and jax: the callback must see the weights that fit
    # trained (JAX syncs its state into the variables before on_epoch_end).
    rng = np.random.default_rng(0)
    x = _images(8)
    y = keras.utils.to_categorical(rng.integers(0, 3, 8), 3).astype("float32")
    model = _amix()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    callback = cb.MixImageSummary(str(tmp_path), x[:4], mean=(0.5,) * 3, std=(0.25,) * 3,
                                  lams=(0.3, 0.5, 0.7), every_n_epochs=2)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    summaries = _image_summaries(str(tmp_path))
    assert [(step, v.tag) for step, v in summaries] == [(2, "amix_masks")]  # epoch 1 skipped
    image, _, _ = _decode(summaries[0][1])
    assert image.shape == (cb.GRID_PAD + 4 * (SIZE + cb.GRID_PAD),
                           cb.GRID_PAD + 8 * (SIZE + cb.GRID_PAD), 3)
    # Written after the last epoch: the picture of the trained model.
    np.testing.assert_array_equal(
        image, cb.mix_grid(model, x[:4], (0.3, 0.5, 0.7), callback.perm, (0.5,) * 3, (0.25,) * 3))
    assert callback._writer is None  # closed at the end of training


@pytest.mark.training
def test_epoch_timer_records_one_positive_duration_per_epoch():
    from keras_amix.training.callbacks import EpochTimer

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    timer = EpochTimer()
    model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=3, verbose=0, callbacks=[timer])
    assert len(timer.seconds) == 3 and all(s > 0 for s in timer.seconds)


@pytest.mark.training
def test_epoch_timer_leaves_out_the_validation_pass(monkeypatch):
    """On a fake clock: each training batch takes 1 s, each validation batch
    100 s (epoch 2 only, two batches): the epochs' times are 2, 2, 2."""
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(cb, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.now += 1.0

        def on_test_batch_end(self, batch, logs=None):
            clock.now += 100.0

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    timer = cb.EpochTimer()
    x, y = np.ones((4, 2)), np.ones((4, 1))
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, validation_data=(x, y),
              validation_freq=[2], callbacks=[Clock(), timer])
    assert clock.now == 3 * 2 + 2 * 100
    assert timer.seconds == [2.0, 2.0, 2.0]


@pytest.mark.training
def test_epoch_timer_with_a_file_keeps_the_epochs_of_earlier_processes(tmp_path, monkeypatch):
    """A run killed after epoch 2 of 4 and resumed by a new process (a new
    timer on the same file, `initial_epoch=2`): `run_seconds` holds all four
    epochs, the first two from the file; `seconds` only this process's."""
    clock = types.SimpleNamespace(now=0.0, step=1.0)
    monkeypatch.setattr(cb, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.now += clock.step

    path = str(tmp_path / "epoch_seconds.json")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2)), np.ones((4, 1))
    first = cb.EpochTimer(path)
    model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[Clock(), first])
    assert first.run_seconds == first.seconds == [2.0, 2.0]
    clock.step = 3.0  # the resumed process runs on a slower machine
    second = cb.EpochTimer(path)
    model.fit(x, y, batch_size=2, epochs=4, initial_epoch=2, verbose=0,
              callbacks=[Clock(), second])
    assert second.seconds == [6.0, 6.0]
    assert second.run_seconds == [2.0, 2.0, 6.0, 6.0]
    with open(path) as f:
        assert json.load(f) == {"0": 2.0, "1": 2.0, "2": 6.0, "3": 6.0}
    # An epoch redone (a kill after its time was written, before its backup) keeps its last time.
    clock.step = 0.5
    third = cb.EpochTimer(path)
    model.fit(x, y, batch_size=2, epochs=4, initial_epoch=3, verbose=0,
              callbacks=[Clock(), third])
    assert third.seconds == [1.0] and third.run_seconds == [2.0, 2.0, 6.0, 1.0]
    assert os.listdir(tmp_path) == ["epoch_seconds.json"]  # no temporary file left


# -------------------------------------------- backup and non-finite losses
def _dense_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return model


def _data(nan_at=None):
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    if nan_at is not None:
        x[nan_at] = np.nan
    return x, y


@pytest.mark.training
def test_non_finite_loss_raises_naming_the_batch_and_keeps_the_last_backup(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = _dense_model()
    x, y = _data()
    callbacks = [cb.TerminateOnNonFinite(), cb.AtomicBackupAndRestore(backup_dir)]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)  # one good epoch
    assert cb.backup_epoch(backup_dir) == 0  # the fit ended: Keras' default drops it
    callbacks[1] = cb.AtomicBackupAndRestore(backup_dir, delete_checkpoint=False)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=callbacks)
    good = [w.copy() for w in model.get_weights()]
    x_bad, _ = _data(nan_at=5)  # the second batch
    with pytest.raises(FloatingPointError, match=r"epoch 2, batch 2 .*loss=nan"):
        model.fit(x_bad, y, batch_size=4, epochs=3, verbose=0, shuffle=False,
                  callbacks=callbacks)
    assert cb.backup_epoch(backup_dir) == 1  # the bad epoch wrote nothing
    restored = _dense_model()
    restored.fit(x, y, batch_size=4, epochs=1, verbose=0,
                 callbacks=[cb.AtomicBackupAndRestore(backup_dir, delete_checkpoint=False)])
    for a, b in zip(restored.get_weights(), good):  # epochs=1 < 1 + 1: nothing trained
        np.testing.assert_array_equal(a, b)


@pytest.mark.training
def test_backup_survives_a_cut_write_and_restores_the_epoch(tmp_path):
    backup_dir = str(tmp_path / "backup")
    model = _dense_model()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[cb.AtomicBackupAndRestore(backup_dir, delete_checkpoint=False)])
    state = cb.backup_state(backup_dir)
    assert state["epoch"] == 2 and sorted(os.listdir(backup_dir)) == sorted(
        [state["weights"], cb.BACKUP_METADATA])
    saved = [w.copy() for w in model.get_weights()]
    # What a kill inside the next write leaves: a cut temporary file, and a cut
    # file under Keras' own name. Neither is read; the next save removes them.
    for name in (".tmp-epoch-3-batch-0.weights.h5", "latest.weights.h5"):
        with open(os.path.join(backup_dir, name), "wb") as f:
            f.write(b"\x89HDF\r\n")
    resumed = _dense_model()
    history = resumed.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[
        cb.AtomicBackupAndRestore(backup_dir, delete_checkpoint=False)])
    assert history.epoch == [2]  # resumed after the 2 backed-up epochs
    state = cb.backup_state(backup_dir)
    assert state["epoch"] == 3
    assert sorted(os.listdir(backup_dir)) == sorted([state["weights"], cb.BACKUP_METADATA])
    assert not np.allclose(resumed.get_weights()[0], saved[0])  # it trained on from there


@pytest.mark.training
def test_backup_refuses_non_finite_weights(tmp_path):
    model = _dense_model()
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    assert cb.first_non_finite_variable(model) == kernel.path
    backup = cb.AtomicBackupAndRestore(str(tmp_path / "backup"))
    backup.set_model(model)
    with pytest.raises(ValueError, match=kernel.path):
        backup._save_model()
    assert cb.backup_state(str(tmp_path / "backup")) is None
