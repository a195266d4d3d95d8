"""Models on Keras' own training step (`StepModel`), on every backend, torch included.

Not marked ``training``: these run in the torch pass of scripts/test.sh too,
so training on torch is exercised by the suite.
"""

import keras
import numpy as np
import pytest

from keras_amix import backbones, models


def _data(n=8, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, n), classes).astype("float32")
    return x, y


def _tiny_backbone():
    return keras.Sequential([keras.Input((8, 8, 3)),
                             keras.layers.Conv2D(4, 3, padding="same", activation="relu")])


def test_vanilla_step_equals_keras_own_trainer():
    """Two SGD steps of the no-mix classifier = Keras' fit of the same network with CE.

    A wrong step (a missing or doubled gradient, the wrong loss reduction, an
    update applied twice) changes the weights by about lr * gradient, far above
    the tolerance. The tolerance covers only float32 rounding: the two losses
    are the same log-softmax CE written in two places (reduction order differs,
    ~1e-7 relative), carried through two steps.
    """
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = models.MixupClassifier(_tiny_backbone(), 3)
    model(x[:1])
    reference = keras.Sequential([keras.Input((8, 8, 3)), _tiny_backbone(),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    reference.set_weights(model.get_weights())
    initial = model.get_weights()
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    reference.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    reference.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(model.get_weights()[0], initial[0])  # the steps did train


@pytest.mark.parametrize("preset", ["amix", "automix"])
def test_amix_trains_and_updates_the_momentum_encoder(preset):
    """Two AMix steps: finite losses; θ, φ and θ_k move, and the step counter counts.

    (The exact EMA rule is checked in tests/models/test_amix.py on TF and JAX.)
    """
    x, y = _data(size=16)
    model = models.AMixClassifier(backbones.resnet(18, width=8), 3, mix_block=preset,
                                  seed=1, total_steps=2)
    model(x[:1])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    before = {id(v): keras.ops.convert_to_numpy(v).copy() for v in model.weights}
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for key in ("loss", "loss_theta", "loss_phi", "mask_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    moved = lambda v: not np.allclose(keras.ops.convert_to_numpy(v), before[id(v)])
    assert any(moved(v) for v in model.backbone.trainable_weights)
    assert any(moved(v) for v in model.mix_block.trainable_weights)
    assert any(moved(v) for v in model.momentum_backbone.weights)
    assert int(keras.ops.convert_to_numpy(model.step_counter)) == 2


def test_sample_and_class_weights_are_refused_before_training():
    x, y = _data()
    model = models.MixupClassifier(_tiny_backbone(), 3)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    initial = model.get_weights()
    with pytest.raises(ValueError, match=r"no sample or class weights.*sample_weight \(8,\)"):
        model.fit(x, y, sample_weight=np.ones(8, "float32"), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight \{0: 2.0\}"):
        model.fit(x, y, class_weight={0: 2.0}, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        model.evaluate(x, y, sample_weight=np.ones(8, "float32"), verbose=0)
    for got, want in zip(model.get_weights(), initial):
        np.testing.assert_array_equal(got, want)
    model.fit(x, y, batch_size=8, verbose=0)  # still trains


def test_a_batch_with_weights_is_refused_by_the_steps():
    """A data set that yields (x, y, sample_weight): refused in the step itself."""
    x, y = _data()
    model = models.MixupClassifier(_tiny_backbone(), 3)
    for step in (model.train_step, model.test_step):
        with pytest.raises(ValueError, match=r"sample_weight \(8,\)"):
            step((x, y, np.ones(8, "float32")))


def test_logs_name_the_trackers_of_each_step():
    """Training logs hold the training trackers, `val_` logs the evaluation ones."""
    x, y = _data(size=16)
    model = models.AMixClassifier(backbones.resnet(18, width=8), 3, seed=1, total_steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0, validation_data=(x, y)).history
    assert set(history) == {
        "loss", "loss_theta", "loss_phi", "mask_loss", "mask_std", "mask_mean_error",
        "momentum", "top1", "val_loss", "val_top1", "val_top1_momentum"}
