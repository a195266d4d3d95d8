import os

import keras
import numpy as np
import pytest

from keras_amix import backbones, models
from keras_amix.layers import MixBlock
from keras_amix.training.schedules import MomentumSchedule

BACKEND = keras.backend.backend()


def _data(n=8, size=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, n), classes).astype("float32")
    return x, y


def _model(preset="amix", classes=3, **kw):
    return models.AMixClassifier(backbones.resnet(18, width=8), classes, mix_block=preset,
                                 seed=1, **kw)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _var_ids(variables):
    return {id(v) for v in variables}


def test_momentum_copies_are_not_trainable_and_start_equal():
    model = _model()
    trainable = _var_ids(model.trainable_weights)
    assert not trainable & _var_ids(model.momentum_backbone.weights)
    assert not trainable & _var_ids(model.momentum_head.weights)
    assert _var_ids(model.mix_block.trainable_weights) <= trainable
    for k, q in model._ema_pairs:
        np.testing.assert_array_equal(_np(k), _np(q))


@pytest.mark.training
@pytest.mark.parametrize("preset,mix_loss", [pytest.param("amix", "ce", marks=pytest.mark.compiled),
                                             ("automix", "ce"),
                                             ("amix", "pbce"), ("amix", "ce+bce")])
def test_fit_and_evaluate_both_encoders(preset, mix_loss):
    x, y = _data()
    model = _model(preset, mix_loss=mix_loss, total_steps=4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    for key in ("loss", "loss_theta", "loss_phi", "mask_loss", "mask_std", "momentum"):
        assert np.all(np.isfinite(history.history[key])), key
    logs = model.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    assert set(logs) == {"top1", "top1_momentum", "loss"}
    assert int(_np(model.step_counter)) == 4


@pytest.mark.training
def test_ema_update_is_exact():
    """The update that follows step 1 runs first thing in step 2 with step 1's
    momentum; before the first step there is none (θ_k stays exactly θ_k0)."""
    x, y = _data(n=4)
    model = _model(momentum_schedule=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    before = [_np(k).copy() for k, _ in model._ema_pairs]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after_one = [(_np(k).copy(), _np(q).copy()) for k, q in model._ema_pairs]
    for (k1, _), k0 in zip(after_one, before):
        np.testing.assert_array_equal(k1, k0)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    moved = 0
    for (k, _), (k1, q1) in zip(model._ema_pairs, after_one):
        np.testing.assert_allclose(_np(k), 0.5 * k1 + 0.5 * q1, rtol=1e-5, atol=1e-6)
        moved += not np.allclose(_np(k), k1)
    assert moved > 0


@pytest.mark.skipif(BACKEND != "tensorflow", reason="uses tf.GradientTape")
@pytest.mark.parametrize("phi_lam_adjust", [False, True])
def test_gradient_routing(phi_lam_adjust):
    """θ's loss reaches only θ; φ's losses reach only the Mix Block (also
    through the λ adjusting of φ's mask)."""
    import tensorflow as tf

    x, y = _data(n=4)
    model = _model("amix", phi_lam_adjust=phi_lam_adjust)
    model.mix_block.gamma_weight.assign(0.5) if hasattr(model.mix_block, "gamma_weight") else None
    block = _var_ids(model.mix_block.trainable_weights)
    encoder = _var_ids(model.backbone.trainable_weights + model.head.trainable_weights
                       + model.mix_head.trainable_weights)
    weights = model.trainable_weights
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_losses(tf.constant(x), tf.constant(y))
    for name, allowed in (("theta", encoder), ("phi", block), ("mask", block)):
        grads = tape.gradient(terms[name], weights)
        for v, g in zip(weights, grads):
            nonzero = g is not None and float(tf.reduce_max(tf.abs(g))) > 0
            if id(v) not in allowed:
                assert not nonzero, f"{name} loss reached {v.path}"
        assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
                   for v, g in zip(weights, grads) if id(v) in allowed), name


@pytest.mark.skipif(BACKEND != "tensorflow", reason="uses tf.GradientTape")
def test_two_heads_each_get_only_their_own_loss():
    """The clean CE reaches only the clean head, the mixup CE only the mix head
    (besides the shared backbone); φ trains through the EMA of the mix head."""
    import tensorflow as tf

    x, y = _data(n=4)
    model = _model("amix", mix_block_kwargs=dict(lam_adjust_prob=0.0), separate_mix_head=True)
    assert model.mix_head is not model.head
    assert model.momentum_mix_head is not model.momentum_head
    x, y = tf.constant(x), tf.constant(y)
    model.clean_loss_weight = 0.0  # loss_theta = the mixup CE alone
    with tf.GradientTape() as tape:
        loss = model.compute_losses(x, y)["theta"]
    grads = tape.gradient(loss, model.head.trainable_weights + model.mix_head.trainable_weights)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0 for g in grads[:2])
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads[2:])

    # φ's loss reads the momentum *mix* head: changing the momentum clean head
    # leaves it unchanged, changing the momentum mix head changes it.
    states = [_np(g.state).copy() for g in model.seed_generators()]

    def phi_loss():  # the same λ, pairs and dropout each time
        for generator, state in zip(model.seed_generators(), states):
            generator.state.assign(state)
        return float(model.compute_losses(x, y)["phi"])

    base = phi_loss()
    model.momentum_head.kernel.assign(model.momentum_head.kernel * 3.0)
    assert phi_loss() == pytest.approx(base, rel=1e-5)
    model.momentum_mix_head.kernel.assign(model.momentum_mix_head.kernel * 3.0)
    assert phi_loss() != pytest.approx(base, rel=1e-3)


@pytest.mark.training
def test_ema_covers_both_heads():
    x, y = _data(n=4)
    model = _model(momentum_schedule=0.5, separate_mix_head=True)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    mix_k1, mix_q1 = (_np(model.momentum_mix_head.kernel).copy(),
                      _np(model.mix_head.kernel).copy())
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    np.testing.assert_allclose(_np(model.momentum_mix_head.kernel),
                               0.5 * mix_k1 + 0.5 * mix_q1, rtol=1e-5, atol=1e-6)


def _stage4_moving_means(model):
    stage4 = backbones.stages(model.momentum_backbone)[-1]
    return [_np(w).copy() for w in stage4.weights if "moving_mean" in w.path]


def test_momentum_full_forward_updates_last_stage_statistics_on_clean_images():
    """With the full forward, θ_k's stage-4 BatchNorm statistics also see the
    clean batch: for the same step (same weights, λ and pairs) they differ
    from the partial forward's, which sees only the φ-mixed images."""
    x, y = _data(n=4)
    first = _model("automix", momentum_full_forward=True)
    fresh = _stage4_moving_means(first)
    results = {}
    for flag in (True, False):
        model = _model("automix", momentum_full_forward=flag)
        model.set_weights(first.get_weights())
        model.compute_losses(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
        results[flag] = _stage4_moving_means(model)
    for flag in (True, False):  # either way the φ forward on mixed images updates them
        assert all(not np.allclose(a, b) for a, b in zip(results[flag], fresh))
    assert all(not np.allclose(a, b) for a, b in zip(results[True], results[False]))


@pytest.mark.parametrize("phi_lam_adjust", [False, True])
def test_phi_lam_adjust_gives_phi_images_of_mask_mean_lambda(phi_lam_adjust):
    """φ's images are x·s + x_perm·(1 − s): with images of one constant value
    each, s is read back from them. With `phi_lam_adjust` its mean per image
    is exactly λ_φ; without it, it is the raw mask the Mix Block returned."""
    n, size = 4, 16
    x = np.broadcast_to(np.arange(1, n + 1, dtype="float32")[:, None, None, None],
                        (n, size, size, 3)).copy()
    _, y = _data(n=n, size=size)
    model = _model("amix", phi_lam_adjust=phi_lam_adjust)
    assert model.get_config()["phi_lam_adjust"] is phi_lam_adjust
    seen = {}

    def capture(x_phi, y, z_end, perm, lam):
        seen.update(x_phi=_np(x_phi), perm=_np(perm), lam=float(_np(lam)))
        return keras.ops.zeros(())

    raw = {}
    mask_and_loss = model.mix_block.mask_and_loss

    def capture_raw(*args, **kwargs):
        mask, loss = mask_and_loss(*args, **kwargs)
        raw["mask"] = _np(mask)
        return mask, loss

    model._mix_block_loss = capture
    model.mix_block.mask_and_loss = capture_raw
    model.compute_losses(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))
    a = x[:, :, :, :1]
    b = x[seen["perm"]][:, :, :, :1]
    moved = a[:, 0, 0, 0] != b[:, 0, 0, 0]  # a sample paired with itself shows no mask
    assert moved.any()
    mask = (seen["x_phi"][:, :, :, :1] - b) / np.where(a == b, 1.0, a - b)
    means = mask[moved].mean(axis=(1, 2, 3))
    raw_means = raw["mask"][moved].mean(axis=(1, 2, 3))
    if phi_lam_adjust:
        np.testing.assert_allclose(means, seen["lam"], atol=1e-4)
        assert np.abs(raw_means - seen["lam"]).max() > 1e-3  # the raw mask was not at λ
    else:
        np.testing.assert_allclose(mask[moved], raw["mask"][moved], atol=1e-4)


def test_old_config_without_heads_keys_loads_as_one_head():
    model = _model(separate_mix_head=False, momentum_full_forward=False)
    assert model.mix_head is model.head
    config = model.get_config()
    for key in ("separate_mix_head", "momentum_full_forward"):
        config.pop(key)
    rebuilt = models.AMixClassifier.from_config(config)
    assert rebuilt.mix_head is rebuilt.head
    assert not rebuilt.momentum_full_forward
    assert len(rebuilt.weights) == len(model.weights)


@pytest.mark.training
def test_training_logs_leave_out_the_momentum_top1():
    x, y = _data()
    model = _model(total_steps=4)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                        validation_data=(x, y)).history
    assert "top1_momentum" not in history
    assert "val_top1_momentum" in history and "top1" in history


@pytest.mark.training
def test_save_load_resume_keeps_schedule_and_optimizers(tmp_path):
    x, y = _data()
    model = _model(total_steps=10)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "amix.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, models.AMixClassifier)
    assert int(_np(loaded.step_counter)) == 2
    assert int(loaded.optimizer.iterations) == 2
    assert loaded.mix_block.get_config() == model.mix_block.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    for (k1, _), (k2, _) in zip(model._ema_pairs, loaded._ema_pairs):
        np.testing.assert_allclose(_np(k1), _np(k2))
    assert not _var_ids(loaded.trainable_weights) & _var_ids(loaded.momentum_backbone.weights)
    np.testing.assert_allclose(float(_np(loaded.momentum_value())),
                               float(_np(model.momentum_value())))
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(_np(loaded.step_counter)) == 4


def test_momentum_value_follows_schedule():
    model = _model(total_steps=100)
    schedule = MomentumSchedule()
    for step in (0, 10, 50, 100):
        model.step_counter.assign(step)
        assert float(_np(model.momentum_value())) == pytest.approx(schedule(step, 100), abs=1e-6)


def test_bad_arguments():
    bb = backbones.resnet(18, width=8)
    with pytest.raises(ValueError, match="mix_loss"):
        models.AMixClassifier(bb, 3, mix_loss="nope")
    with pytest.raises(ValueError, match="alpha"):
        models.AMixClassifier(bb, 3, alpha=0.0)
    with pytest.raises(ValueError, match="feature_stage"):
        models.AMixClassifier(bb, 3, feature_stage="stage9")
    with pytest.raises(ValueError, match="mix_block"):
        models.AMixClassifier(bb, 3, mix_block=42)
    plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)])
    with pytest.raises(ValueError, match="stage"):
        models.AMixClassifier(plain, 3)
    model = models.AMixClassifier(bb, 3)
    x, y = _data(size=10)
    with pytest.raises(ValueError, match="multiple of the stage3 stride"):
        model.train_outputs(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y))


def test_custom_mix_block_object():
    bb = backbones.resnet(18, width=8)
    block = MixBlock(preset="automix", name="mix_block")
    model = models.AMixClassifier(bb, 3, mix_block=block)
    assert model.mix_block is block


@pytest.mark.backend_independent
def test_export_online_and_momentum_encoders(tmp_path):
    import tensorflow as tf

    from keras_amix.export import export_saved_model

    x, y = _data(n=4)
    model = _model(momentum_schedule=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for encoder, momentum in (("online", False), ("momentum", True)):
        path = str(tmp_path / encoder)
        export_saved_model(model.classifier(encoder), path)
        loaded = tf.saved_model.load(path)  # keep a reference: its variables die with it
        served = loaded.serve(tf.constant(x))["output"].numpy()
        expected = keras.ops.convert_to_numpy(
            keras.ops.softmax(model(x, training=False, momentum=momentum)))
        np.testing.assert_allclose(served, expected, atol=1e-5)
    with pytest.raises(ValueError, match="encoder"):
        model.classifier("target")


@pytest.mark.training
def test_mixed_bfloat16_trains_without_nan():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x, y = _data(n=4)
        model = _model(total_steps=4)
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for key in ("loss", "loss_theta", "loss_phi", "mask_loss", "mask_std"):
        assert np.all(np.isfinite(history[key])), key


@pytest.mark.training
def test_separate_phi_optimizer_state_survives_save_load(tmp_path):
    """θ and φ with their own SGD (MultiOptimizer); both resume after reload."""
    x, y = _data()
    model = _model(total_steps=10)
    optimizer = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        default_optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        optimizer_map={".*mix_block.*": keras.optimizers.SGD(0.1, momentum=0.9)}))
    model.compile(optimizer=optimizer)
    before = {v.path: _np(v).copy() for v in model.mix_block.trainable_weights}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert any(not np.allclose(_np(v), before[v.path]) for v in model.mix_block.trainable_weights)
    path = os.path.join(tmp_path, "multi.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [float(_np(o.learning_rate)) for o in loaded.optimizer.optimizers] == \
        pytest.approx([float(_np(o.learning_rate)) for o in model.optimizer.optimizers])
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-6)
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert int(_np(loaded.step_counter)) == 4
