import os

import keras
import numpy as np
import pytest

from keras_amix import backbones, mixers, models


def _data(n=8, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, n), classes).astype("float32")
    return x, y


def _model(mixer=None, classes=3, **kw):
    return models.MixupClassifier(backbones.resnet(18, width=8), classes, mixer=mixer, **kw)


@pytest.mark.training
@pytest.mark.parametrize("mixer", [None, "mixup", "cutmix"])
def test_fit_evaluate_predict(mixer):
    x, y = _data()
    model = _model(mixer)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    logs = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    assert set(logs) == {"loss", "top1"}
    assert 0.0 <= logs["top1"] <= 1.0
    assert model.predict(x, batch_size=4, verbose=0).shape == (8, 3)


@pytest.mark.training
def test_training_changes_weights_and_evaluation_does_not_mix():
    x, y = _data()
    model = _model("mixup")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights())]
    assert any(changed)
    # evaluate twice: no randomness (no mixing) at evaluation
    a = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    b = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


@pytest.mark.training
def test_vanilla_loss_equals_soft_cross_entropy():
    """The tracked training loss of one step is the CE of the logits before the step."""
    x, y = _data(n=4)
    model = _model(None)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    logits = keras.ops.convert_to_numpy(model(x, training=True))
    model2 = _model(None)
    model2.compile(optimizer=keras.optimizers.SGD(0.0))
    model2(x[:1])
    model2.set_weights(model.get_weights())
    logs = model2.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    expected = float(-(y * logp).sum(1).mean())
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-4)


@pytest.mark.training
def test_save_load_resume(tmp_path):
    x, y = _data()
    model = _model("cutmix", mixer_kwargs=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, models.MixupClassifier)
    assert loaded.mixer.get_config()["alpha"] == model.mixer.get_config()["alpha"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(loaded.optimizer.iterations) == 4


@pytest.mark.training
@pytest.mark.parametrize("name", [pytest.param("manifoldmix", marks=pytest.mark.compiled),
                                  pytest.param("puzzlemix", marks=pytest.mark.compiled),
                                  "comixup", "saliencymix", "fmix", "resizemix"])
def test_every_mixer_trains(name):
    if name not in mixers.available():
        pytest.skip(f"{name} not registered")
    x, y = _data(size=16)
    model = _model(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_saliency_is_input_gradient_magnitude():
    x, y = _data(n=2)
    model = _model(None)
    sal = keras.ops.convert_to_numpy(model.saliency(keras.ops.convert_to_tensor(x), y))
    assert sal.shape == (2, 8, 8, 1)
    assert np.all(sal >= 0) and sal.max() > 0


def test_bad_arguments():
    bb = backbones.resnet(18, width=8)
    with pytest.raises(ValueError, match="num_classes"):
        models.MixupClassifier(bb, 1)
    with pytest.raises(ValueError, match="label_smoothing"):
        models.MixupClassifier(bb, 3, label_smoothing=1.5)
    with pytest.raises(ValueError, match="nope"):
        models.MixupClassifier(bb, 3, mixer="nope")
    model = models.MixupClassifier(bb, 3)
    x, y = _data(n=4)
    with pytest.raises(ValueError, match="labels"):
        model.train_outputs(keras.ops.convert_to_tensor(x), keras.ops.ones((4, 5)))
    with pytest.raises(ValueError, match="rank-4"):
        model.train_outputs(keras.ops.ones((4, 8, 8)), y)


def test_compile_rejects_loss_and_metrics():
    model = _model(None)
    with pytest.raises(ValueError, match="loss"):
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="metrics"):
        model.compile(optimizer="sgd", metrics=["accuracy"])
