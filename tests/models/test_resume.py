"""Exact resume: a run interrupted after k steps and resumed from its saved
weights (BackupAndRestore's `.weights.h5`, or a `.keras` file) continues the
random streams (λ, pairings), the queue and the step counters where they
stopped, so it ends where the uninterrupted 2k-step run ends."""

import os
import warnings

import keras
import numpy as np
import pytest

from keras_amix import backbones
from keras_amix.models.amix import AMixClassifier
from keras_amix.models.classifier import MixupClassifier
from keras_amix.models.moco import MoCoV2
from keras_amix.training.seed_state import SEED_STATE_KEY
from keras_amix.training.step import StepModel

BACKEND = keras.backend.backend()
STEPS = 2  # k: steps per epoch; the uninterrupted run trains 2 epochs


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _classifier():
    return MixupClassifier(backbones.resnet(18, width=8), 4, mixer="mixup",
                           mixer_kwargs={"seed": 3})


def _amix():
    return AMixClassifier(backbones.resnet(18, width=8), 4, total_steps=2 * STEPS, seed=3)


def _moco():
    return MoCoV2(backbones.resnet(18, width=8), projection_dim=8, hidden_dim=16,
                  queue_size=12, momentum=0.9, mixer="mixup", seed=3)


def _data(kind):
    rng = np.random.default_rng(0)
    n = 4 * STEPS
    images = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    if kind == "moco":
        return {"view1": images, "view2": rng.normal(size=images.shape).astype("float32")}, None
    return images, np.eye(4, dtype="float32")[rng.integers(0, 4, n)]


BUILDERS = {"classifier": _classifier, "amix": _amix, "moco": _moco}


def _fresh(kind):
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    model = BUILDERS[kind]()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def _fit(model, kind, epochs, callbacks=()):
    x, y = _data(kind)
    return model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=list(callbacks))


def _state(model):
    """Everything a resumed run must continue: weights (incl. queue, queue
    pointer, step counter), optimizer variables and seed states."""
    return {
        "weights": [_np(w).copy() for w in model.weights],
        "optimizer": [_np(v).copy() for v in model.optimizer.variables],
        "seeds": [_np(g.state).copy() for g in model.seed_generators()],
    }


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # the job is killed after epoch 1's backup


def _assert_same_run(resumed, uninterrupted):
    # Seed states, counters and the queue pointer are integers: exact.
    assert len(resumed["seeds"]) == len(uninterrupted["seeds"]) > 0
    for got, want in zip(resumed["seeds"], uninterrupted["seeds"]):
        np.testing.assert_array_equal(got, want)
    assert len(resumed["weights"]) == len(uninterrupted["weights"])
    for got, want in zip(resumed["weights"] + resumed["optimizer"],
                         uninterrupted["weights"] + uninterrupted["optimizer"]):
        if got.dtype.kind in "iu":
            np.testing.assert_array_equal(got, want)
        else:
            # Both runs execute the same compiled step on the same values; on
            # CPU the kernels are deterministic, so the floats agree bit for
            # bit. (A resumed run that re-draws epoch 1's λ and pairings
            # differs by O(lr · |grad|) ~ 1e-3, not by rounding.)
            np.testing.assert_array_equal(got, want)


@pytest.mark.training
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_backup_and_restore_resumes_exactly(kind, tmp_path):
    model = _fresh(kind)
    _fit(model, kind, epochs=2)
    uninterrupted = _state(model)

    backup = os.path.join(tmp_path, "backup")
    model = _fresh(kind)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, kind, epochs=2,
             callbacks=[keras.callbacks.BackupAndRestore(backup), _StopAfterFirstEpoch()])
    after_k = _state(model)

    model = _fresh(kind)
    fresh_seeds = [_np(g.state).copy() for g in model.seed_generators()]
    # The saved seed states are not the fresh ones: restoring them matters.
    assert any(not np.array_equal(a, b) for a, b in zip(after_k["seeds"], fresh_seeds))
    _fit(model, kind, epochs=2, callbacks=[keras.callbacks.BackupAndRestore(backup)])
    _assert_same_run(_state(model), uninterrupted)


@pytest.mark.training
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_keras_file_resumes_exactly(kind, tmp_path):
    model = _fresh(kind)
    _fit(model, kind, epochs=2)
    uninterrupted = _state(model)

    model = _fresh(kind)
    _fit(model, kind, epochs=1)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    keras.utils.clear_session()
    loaded = keras.saving.load_model(path)
    for got, want in zip(loaded.seed_generators(), model.seed_generators()):
        np.testing.assert_array_equal(_np(got.state), _np(want.state))
    _fit(loaded, kind, epochs=1)
    _assert_same_run(_state(loaded), uninterrupted)


def test_every_models_seed_generators_are_found():
    # MixupClassifier: its mixer's; AMix: the model's, the Mix Block's and
    # its value Dropout's; MoCo: one stream shared by the model and its mixer.
    classifier = _classifier()
    assert classifier.seed_generators() == [classifier.mixer.seed_generator]
    amix = _amix()
    assert amix.seed_generators() == [amix.seed_generator, amix.mix_block.seed_generator,
                                      amix.mix_block.value_dropout.seed_generator]
    moco = _moco()
    assert moco.seed_generators() == [moco.seed_generator]
    assert moco.mixer.layer.seed_generator is moco.seed_generator


def test_weights_without_seed_states_still_load(tmp_path, monkeypatch):
    # A file written before the seed states were saved: Keras' own
    # `save_own_variables` (the model's variables only).
    model = _moco()
    model.queue_ptr.assign(5)
    model.seed_generator.state.assign(np.array([3, 7], "uint32"))
    path = os.path.join(tmp_path, "old.weights.h5")
    monkeypatch.setattr(StepModel, "save_own_variables", keras.Model.save_own_variables)
    model.save_weights(path)
    monkeypatch.undo()
    fresh = _moco()
    with pytest.warns(UserWarning, match="no seed generator state"):
        fresh.load_weights(path)
    assert int(_np(fresh.queue_ptr)) == 5
    np.testing.assert_array_equal(_np(fresh.queue), _np(model.queue))
    np.testing.assert_array_equal(_np(fresh.seed_generator.state), [3, 0])  # its initial seed


def test_seed_states_are_stored_and_mismatch_is_a_clear_error(tmp_path):
    model = _amix()
    model.seed_generator.state.assign(np.array([3, 9], "uint32"))
    path = os.path.join(tmp_path, "amix.weights.h5")
    model.save_weights(path)
    fresh = _amix()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no seed state" warning
        fresh.load_weights(path)
    np.testing.assert_array_equal(_np(fresh.seed_generator.state), [3, 9])
    store = {"0": np.zeros(()), f"{SEED_STATE_KEY}0": np.array([1, 2], "uint32")}
    with pytest.raises(ValueError, match="3 seed generator.*stores 1 seed state"):
        _amix().load_own_variables(store)
