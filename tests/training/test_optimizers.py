"""CoupledSGD against torch.optim.SGD's update rule written out in numpy."""

import keras
import numpy as np
import pytest

from keras_amix.training.optimizers import CoupledSGD


def torch_sgd_reference(w, grads, lrs, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD (dampening 0), one step per gradient, in float64."""
    w = np.array(w, np.float64)
    buf = None
    for g, lr in zip(grads, lrs):
        d = np.asarray(g, np.float64) + weight_decay * w
        buf = d.copy() if buf is None else momentum * buf + d
        step = d + momentum * buf if nesterov else buf
        w = w - lr * step
    return w


def run_keras(optimizer, w0, grads):
    var = keras.Variable(np.array(w0, np.float32))
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(np.float32(g)), var)])
    return keras.ops.convert_to_numpy(var)


def test_one_step_by_hand():
    # w = 2, g = 0.5, wd = 0.1, lr = 0.1: d = 0.5 + 0.2 = 0.7; w = 2 - 0.07 = 1.93.
    opt = CoupledSGD(0.1, momentum=0.9, weight_decay=0.1)
    np.testing.assert_allclose(run_keras(opt, [2.0], [[0.5]]), [1.93], rtol=1e-6)


def test_two_steps_by_hand():
    # step 2: d = 0.5 + 0.1 * 1.93 = 0.693; b = 0.9 * 0.7 + 0.693 = 1.323;
    # w = 1.93 - 0.1 * 1.323 = 1.7977.
    opt = CoupledSGD(0.1, momentum=0.9, weight_decay=0.1)
    np.testing.assert_allclose(run_keras(opt, [2.0], [[0.5], [0.5]]), [1.7977], rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_torch_rule_under_a_schedule(nesterov):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,))
    grads = rng.normal(size=(6, 5))
    schedule = keras.optimizers.schedules.CosineDecay(0.2, decay_steps=6, alpha=0.25)
    lrs = [float(schedule(i)) for i in range(6)]
    opt = CoupledSGD(schedule, momentum=0.9, weight_decay=5e-2, nesterov=nesterov)
    ours = run_keras(opt, w0, grads)
    ref = torch_sgd_reference(w0, grads, lrs, 0.9, 5e-2, nesterov)
    # float32 arithmetic over 6 steps of O(1) values: a few ulps of the magnitude.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=64 * np.finfo(np.float32).eps)
    # The decoupled Keras SGD at the same wd is a different update.
    keras_sgd = run_keras(keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-2,
                                               nesterov=nesterov), w0, grads)
    assert np.max(np.abs(keras_sgd - ref)) > 1e-3


def test_without_momentum_and_excluded_variables():
    opt = CoupledSGD(0.5, momentum=0.0, weight_decay=0.2)
    keep = keras.Variable(np.float32([1.0]), name="bias")
    decay = keras.Variable(np.float32([1.0]), name="kernel")
    opt.exclude_from_weight_decay(var_names=["bias"])
    g = keras.ops.convert_to_tensor(np.float32([0.0]))
    opt.apply_gradients([(g, keep), (g, decay)])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keep), [1.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decay), [0.9], rtol=1e-6)


def test_serialization_round_trip():
    opt = CoupledSGD(0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, CoupledSGD)
    assert clone.coupled_weight_decay == 1e-4 and clone.weight_decay is None
    assert clone.momentum == 0.9 and clone.nesterov


@pytest.mark.parametrize("bad", [-1e-4, float("inf"), float("nan"), "1e-4", True])
def test_rejects_bad_weight_decay(bad):
    with pytest.raises(ValueError, match="weight_decay"):
        CoupledSGD(0.1, weight_decay=bad)


def test_fit_with_jit_trains():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=CoupledSGD(0.05, momentum=0.9, weight_decay=1e-3), loss="mse")
    x = np.random.default_rng(1).normal(size=(32, 3)).astype("float32")
    y = x @ np.float32([[1.0], [-2.0], [0.5]])
    history = model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
