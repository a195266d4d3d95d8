import os

import keras
import numpy as np
import pytest

from keras_amix import backbones
from keras_amix import losses as losses_lib
from keras_amix.models import moco_mixing
from keras_amix.models.moco import MoCoV2

TAU = 0.2


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _views(n=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    v1 = rng.normal(size=(n, size, size, 3)).astype("float32")
    v2 = rng.normal(size=(n, size, size, 3)).astype("float32")
    return {"view1": v1, "view2": v2}


def _model(**kw):
    kw.setdefault("queue_size", 16)
    return MoCoV2(backbones.resnet(18, width=8), projection_dim=8, hidden_dim=16, seed=1, **kw)


def _nce_np(q, k, negatives):
    """Per-row infoNCE, positive at index 0; negatives (K, d) or (B, K, d)."""
    pos = np.sum(q * k, axis=-1, keepdims=True)
    neg = q @ negatives.T if negatives.ndim == 2 else np.einsum("bd,bkd->bk", q, negatives)
    logits = np.concatenate([pos, neg], axis=-1) / TAU
    m = logits.max(axis=-1, keepdims=True)
    return (np.log(np.exp(logits - m).sum(-1)) + m[:, 0]) - logits[:, 0]


def _ids(variables):
    return {id(v) for v in variables}


def test_key_encoder_is_a_frozen_copy_and_queue_is_unit_norm():
    model = _model()
    trainable = _ids(model.trainable_weights)
    key_vars = (model.key_backbone.weights + model.key_proj_hidden.weights
                + model.key_proj_out.weights)
    assert not trainable & _ids(key_vars)
    assert not trainable & _ids([model.queue, model.queue_ptr])
    for k, q in model._ema_pairs:
        np.testing.assert_array_equal(_np(k), _np(q))
    np.testing.assert_allclose(np.linalg.norm(_np(model.queue), axis=1), 1.0, rtol=1e-5)
    assert int(_np(model.queue_ptr)) == 0
    x = _views()
    emb = _np(model(x["view1"]))
    assert emb.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert _np(model.encoder_features(x["view1"])).shape == (4, 64)


@pytest.mark.training
def test_key_encoder_follows_ema_of_the_previous_update():
    """The update that follows step 1 runs first thing in step 2 (as in MoCo):
    after two steps θ_k = m θ_k' + (1 − m) θ_q', the weights after step 1."""
    x = _views()
    model = _model(momentum=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    after_one = [(_np(k).copy(), _np(q).copy()) for k, q in model._ema_pairs]
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    moved = 0
    for (k, _), (k1, q1) in zip(model._ema_pairs, after_one):
        # No gradient reached k: it is exactly the EMA of its old value and
        # the query weights of the update before.
        np.testing.assert_allclose(_np(k), 0.5 * k1 + 0.5 * q1, rtol=1e-5, atol=1e-6)
        moved += not np.allclose(_np(k), k1)
    assert moved > 0


@pytest.mark.training
def test_queue_pointer_wraps_and_rows_hold_the_right_keys():
    # momentum 1: the key encoder stays fixed, so each batch's keys are reproducible.
    x = _views(n=12)
    model = _model(queue_size=10, momentum=1.0)
    queue0 = _np(model.queue).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert int(_np(model.queue_ptr)) == 2  # 12 keys written into 10 rows
    keys = np.concatenate([_np(model.key_embedding(x["view2"][i:i + 4], training=True))
                           for i in (0, 4, 8)])
    queue = _np(model.queue)
    expected = np.empty_like(queue0)
    for position, key in enumerate(keys):
        expected[position % 10] = key
    np.testing.assert_allclose(queue, expected, atol=1e-4)
    np.testing.assert_allclose(queue[0:2], keys[10:12], atol=1e-4)
    np.testing.assert_allclose(queue[2:4], keys[2:4], atol=1e-4)


def test_enqueue_wraps_modulo_queue_size():
    model = _model(queue_size=10)
    model.queue_ptr.assign(8)
    keys = np.eye(8, dtype="float32")[:4]
    before = _np(model.queue).copy()
    model.enqueue(keras.ops.convert_to_tensor(keys))
    queue = _np(model.queue)
    np.testing.assert_array_equal(queue[[8, 9, 0, 1]], keys)
    np.testing.assert_array_equal(queue[2:8], before[2:8])
    assert int(_np(model.queue_ptr)) == 2


def test_plain_loss_is_eq2_with_view1_queries_and_view2_keys():
    x = _views()
    model = _model()
    terms = model.compute_losses(x)
    q = _np(model.query_embedding(x["view1"], training=True))
    k = _np(model.key_embedding(x["view2"], training=True))
    expected = _nce_np(q, k, _np(model.queue)).mean()
    np.testing.assert_allclose(float(_np(terms["nce"])), expected, rtol=1e-5)
    assert float(_np(terms["mix"])) == 0.0
    np.testing.assert_allclose(_np(terms["keys"]), k, atol=1e-6)


def test_cross_view_mixup_uses_the_other_views_keys():
    x = _views()
    model = _model(mixer="mixup")
    lam = np.full((4,), 0.7, "float32")
    perm = np.array([1, 2, 3, 0], "int32")
    params = {"lam": keras.ops.convert_to_tensor(lam), "perm": keras.ops.convert_to_tensor(perm)}
    got = float(_np(model.compute_losses(x, mix_params=params)["mix"]))
    v1, v2 = x["view1"], x["view2"]
    q_mix = _np(model.query_embedding(0.7 * v1 + 0.3 * v2[perm], training=True))
    k1 = _np(model.key_embedding(v1, training=True))
    k2 = _np(model.key_embedding(v2, training=True))
    queue = _np(model.queue)
    expected = (0.7 * _nce_np(q_mix, k2, queue) + 0.3 * _nce_np(q_mix, k1[perm], queue)).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A same-view pairing (k2 for perm(i)) is a different loss.
    wrong = (0.7 * _nce_np(q_mix, k2, queue) + 0.3 * _nce_np(q_mix, k2[perm], queue)).mean()
    assert abs(wrong - got) > 1e-4


def test_imix_virtual_labels_over_batch_keys_and_queue():
    x = _views()
    model = _model(mixer="imix")
    perm = np.array([2, 0, 3, 1], "int32")
    params = {"lam": keras.ops.convert_to_tensor(0.6), "perm": keras.ops.convert_to_tensor(perm)}
    terms = model.compute_losses(x, mix_params=params)
    v1 = x["view1"]
    q = _np(model.query_embedding(0.6 * v1 + 0.4 * v1[perm], training=True))
    k2 = _np(model.key_embedding(x["view2"], training=True))
    logits = q @ np.concatenate([k2, _np(model.queue)]).T / TAU
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -(0.6 * logp[np.arange(4), np.arange(4)] + 0.4 * logp[np.arange(4), perm]).mean()
    np.testing.assert_allclose(float(_np(terms["mix"])), expected, rtol=1e-5)
    assert float(_np(terms["nce"])) == 0.0


def test_unmix_mixes_with_the_reversed_batch():
    x = _views()
    model = _model(mixer="unmix")
    mask = np.ones((4, 8, 8, 1), "float32")
    mask[:, :4] = 0.0
    params = {"lam": keras.ops.convert_to_tensor(0.3), "mask": keras.ops.convert_to_tensor(mask),
              "cutmix_lam": keras.ops.convert_to_tensor(np.full((4,), 0.5, "float32"))}
    got = float(_np(model.compute_losses(x, mix_params=params)["mix"]))
    v1, rev = x["view1"], x["view1"][::-1]
    k2 = _np(model.key_embedding(x["view2"], training=True))
    queue = _np(model.queue)
    expected = 0.0
    for x_mix, w in ((0.3 * v1 + 0.7 * rev, 0.3), (mask * v1 + (1 - mask) * rev, 0.5)):
        q = _np(model.query_embedding(x_mix, training=True))
        expected += 0.5 * (w * _nce_np(q, k2, queue) + (1 - w) * _nce_np(q, k2[::-1], queue)).mean()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mochi_synthetic_negatives_are_unit_norm_and_hard():
    model = _model(mixer="mochi", mixer_kwargs={"num_hard": 1, "num_mix": 3, "num_query_mix": 2})
    rng = np.random.default_rng(3)
    q = rng.normal(size=(4, 8)).astype("float32")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    queue = _np(model.queue)
    synthetic = _np(model.mixer.hard_negatives(model, keras.ops.convert_to_tensor(q),
                                                model.queue))
    assert synthetic.shape == (4, 5, 8)
    np.testing.assert_allclose(np.linalg.norm(synthetic, axis=-1), 1.0, rtol=1e-5)
    hardest = queue[np.argmax(q @ queue.T, axis=1)]
    # num_hard = 1: mixing the hardest key with itself gives it back ...
    np.testing.assert_allclose(synthetic[:, :3], np.repeat(hardest[:, None], 3, 1), atol=1e-5)
    # ... and the query mixes (query weight < 0.5) stay closer to it than to q.
    s = synthetic[:, 3:]
    assert np.all(np.einsum("bsd,bd->bs", s, hardest) >= np.einsum("bsd,bd->bs", s, q) - 1e-6)


def test_mochi_negatives_only_join_their_own_query():
    model = _model(mixer="mochi", mixer_kwargs={"num_hard": 4, "num_mix": 3, "num_query_mix": 2})
    rng = np.random.default_rng(4)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    q, k = unit(rng.normal(size=(4, 8))), unit(rng.normal(size=(4, 8)))
    synthetic = unit(rng.normal(size=(4, 5, 8)))
    queue = _np(model.queue)
    t = keras.ops.convert_to_tensor
    got = _np(model.mixer.loss(model, t(q.astype("float32")), t(k.astype("float32")),
                               model.queue, t(synthetic.astype("float32"))))
    expected = _nce_np(q, k, np.concatenate(
        [np.broadcast_to(queue, (4,) + queue.shape), synthetic], axis=1))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Changing query 1's synthetic negatives leaves the other losses alone.
    other = synthetic.copy()
    other[1] = unit(rng.normal(size=(5, 8)))
    got2 = _np(model.mixer.loss(model, t(q.astype("float32")), t(k.astype("float32")),
                                model.queue, t(other.astype("float32"))))
    np.testing.assert_allclose(got2[[0, 2, 3]], got[[0, 2, 3]], rtol=1e-6)
    assert abs(got2[1] - got[1]) > 1e-4


@pytest.mark.training
@pytest.mark.parametrize("mixer", [None, pytest.param("mixup", marks=pytest.mark.compiled),
                                   "cutmix", pytest.param("imix", marks=pytest.mark.compiled),
                                   "unmix", "mochi"])
def test_fit_and_evaluate(mixer):
    x = _views(n=8)
    labels = np.zeros((8,), "int32")
    kwargs = {"num_hard": 4, "num_mix": 4, "num_query_mix": 2} if mixer == "mochi" else None
    model = _model(mixer=mixer, mixer_kwargs=kwargs, momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(x, labels, batch_size=4, epochs=1, verbose=0).history
    for key in ("loss", "loss_nce", "loss_mix"):
        assert np.all(np.isfinite(history[key])), key
    if mixer not in (None, "mochi"):
        assert history["loss_mix"][0] > 0
    assert int(_np(model.queue_ptr)) == 8
    logs = model.evaluate(x, labels, batch_size=4, return_dict=True, verbose=0)
    assert set(logs) == {"loss"} and np.isfinite(logs["loss"])


def test_split_bn_keys_and_queries_are_normalised_with_different_samples():
    """MoCo's shuffling BN on one device (bn_splits=4, batch 8): a query is
    normalised with its consecutive group ({0, 1} for sample 0), its key with
    its group of the reordered batch ({0, 2}); changing sample 1 changes
    query 0 but not key 0, changing sample 2 the other way round. Keys come
    back in the images' order, and inference ignores the groups."""
    model = MoCoV2(backbones.resnet(18, width=4, bn_splits=4), projection_dim=8,
                   hidden_dim=16, queue_size=16, seed=1)
    assert model.bn_splits == 4
    x = _views(n=8)["view1"]

    def embed(images):
        return (_np(model.query_embedding(images, training=True)),
                _np(model.key_embedding(images, training=True)))

    q, k = embed(x)
    for other, query_moves, key_moves in ((1, True, False), (2, False, True)):
        changed = x.copy()
        changed[other] += 3.0
        q2, k2 = embed(changed)
        assert (np.abs(q2[0] - q[0]).max() > 1e-4) == query_moves, other
        assert (np.abs(k2[0] - k[0]).max() > 1e-4) == key_moves, other
    plain = MoCoV2(backbones.resnet(18, width=4), projection_dim=8, hidden_dim=16,
                   queue_size=16, seed=1)
    assert plain.bn_splits == 1
    np.testing.assert_allclose(_np(model.key_embedding(x, training=False))[:2],
                               _np(model.key_embedding(x[:2], training=False)), atol=1e-5)


@pytest.mark.training
def test_split_bn_trains_and_needs_a_batch_of_its_multiple():
    model = MoCoV2(backbones.resnet(18, width=4, bn_splits=2), projection_dim=8,
                   hidden_dim=16, queue_size=16, seed=1, mixer="mixup")
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = model.fit(_views(n=8), np.zeros(8), batch_size=4, epochs=1, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))
    with pytest.raises(ValueError, match="multiple of num_splits=2"):
        model.fit(_views(n=6), np.zeros(6), batch_size=3, epochs=1, verbose=0)


@pytest.mark.training
def test_save_load_keeps_queue_pointer_and_encoders(tmp_path):
    x = _views(n=8)
    model = _model(mixer="mixup", mixer_kwargs={"alpha": 0.5}, queue_size=10)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "moco.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MoCoV2)
    config, loaded_config = model.get_config(), loaded.get_config()
    config.pop("backbone"), loaded_config.pop("backbone")
    assert loaded_config == config
    assert loaded.mixer.name == "mixup" and loaded.mixer.layer.alpha == 0.5
    assert int(_np(loaded.queue_ptr)) == 8
    np.testing.assert_allclose(_np(loaded.queue), _np(model.queue))
    for (k1, _), (k2, _) in zip(model._ema_pairs, loaded._ema_pairs):
        np.testing.assert_allclose(_np(k1), _np(k2))
    np.testing.assert_allclose(_np(loaded(x["view1"])), _np(model(x["view1"])), atol=1e-5)
    loaded.fit(x, batch_size=4, epochs=1, verbose=0)
    assert int(_np(loaded.queue_ptr)) == 6


def test_bad_arguments():
    bb = backbones.resnet(18, width=8)
    for kwargs, name in (({"queue_size": 0}, "queue_size=0"),
                         ({"temperature": 0.0}, "temperature=0.0"),
                         ({"projection_dim": -1}, "projection_dim=-1"),
                         ({"hidden_dim": 0}, "hidden_dim=0"),
                         ({"momentum": 1.5}, "momentum=1.5"),
                         ({"mixer": "nope"}, "nope"),
                         ({"mixer": "mochi", "mixer_kwargs": {"k": 1}}, "mochi")):
        with pytest.raises(ValueError, match=name):
            MoCoV2(bb, **kwargs)


@pytest.mark.parametrize("strategy,name", [
    (moco_mixing.CrossView("cutmix", alpha=0.5), "cutmix"),
    (moco_mixing.IMix(alpha=0.5), "imix"),
    (moco_mixing.UnMix(alpha=0.5), "unmix"),
    (moco_mixing.MoCHi(num_hard=2, num_mix=1, num_query_mix=0), "mochi"),
])
def test_a_strategy_object_is_the_same_as_its_name(strategy, name):
    kwargs = {k: v for k, v in strategy.get_config().items() if k != "mixer"}
    by_name, by_object = _model(mixer=name, mixer_kwargs=kwargs), _model(mixer=strategy)
    assert by_object.mixer is strategy and by_name.mixer.get_config() == strategy.get_config()
    by_object.set_weights(by_name.get_weights())
    x = {k: keras.ops.convert_to_tensor(v) for k, v in _views().items()}
    for key in ("nce", "mix"):
        np.testing.assert_allclose(_np(by_name.compute_losses(x)[key]),
                                   _np(by_object.compute_losses(x)[key]), rtol=1e-6)
    # It serialises as itself and comes back with the model's config.
    config = keras.saving.serialize_keras_object(strategy)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(strategy) and again.get_config() == strategy.get_config()
    assert MoCoV2.from_config(by_object.get_config()).mixer.get_config() == strategy.get_config()


def test_a_config_of_the_name_era_still_loads():
    # Before the strategies, `mixer` was a name and `mixer_kwargs` its arguments.
    config = _model().get_config()
    config.update(mixer="imix", mixer_kwargs={"alpha": 0.25})
    model = MoCoV2.from_config(config)
    assert isinstance(model.mixer, moco_mixing.IMix) and model.mixer.alpha == 0.25


def test_a_new_strategy_is_one_class():
    class Mirror(moco_mixing.MoCoMixing):
        """Toy: view 1 against its horizontal flip's key, as a 'mixup' term."""

        name = "mirror"

        def mix_loss(self, model, view1, view2, k2, queue, clusters=None, params=None):
            q = model.query_embedding(view1, training=True)
            k = model.key_embedding(keras.ops.flip(view1, axis=2), training=True)
            return keras.ops.mean(losses_lib.info_nce(q, k, queue, model.temperature))

    model = _model(mixer=Mirror())
    terms = model.compute_losses({k: keras.ops.convert_to_tensor(v) for k, v in _views().items()})
    assert float(_np(terms["mix"])) > 0 and model.mixer.name == "mirror"


def test_strategy_arguments_are_checked():
    for make, match in ((lambda: moco_mixing.IMix(alpha=0), "alpha=0"),
                        (lambda: moco_mixing.MoCHi(num_hard=0), "num_hard=0"),
                        (lambda: moco_mixing.CrossView(3), "3"),
                        (lambda: _model(mixer=moco_mixing.IMix(), mixer_kwargs={"alpha": 1}),
                         "mixer_kwargs"),
                        (lambda: _model(mixer="puzzlemix"), "saliency"),
                        (lambda: _model(mixer="inter_intra"), "num_samples")):
        with pytest.raises(ValueError, match=match):
            make()


def test_queue_smaller_than_batch_is_rejected():
    model = _model(queue_size=3)
    x = {k: keras.ops.convert_to_tensor(v) for k, v in _views().items()}
    with pytest.raises(ValueError, match="queue_size=3"):
        model.train_outputs(x, None)
    with pytest.raises(ValueError, match="view1"):
        model.train_outputs(x["view1"], None)


def test_inter_intra_mixes_up_within_a_cluster_and_cuts_across():
    """Inter-Intra (C): pairs with equal ODC labels get MixUp (weight λ), the
    others the CutMix box and λ = its area; eq. 4 with each pair's λ."""
    from keras_amix import losses as losses_lib

    model = _model(mixer="inter_intra", num_samples=4, num_clusters=2,
                   odc_kwargs={"min_cluster_size": 1}, momentum=1.0)
    model.odc.labels.assign(np.array([0, 0, 1, 1], "int32"))
    x = _views()
    x["ids"] = np.arange(4)
    perm = np.array([1, 0, 3, 2], "int32")  # pairs (0,1) (2,3): same cluster ...
    box = np.zeros((4, 8, 8, 1), "float32")
    box[:, :4] = 1.0  # CutMix weight of image a: the top half
    params = {"lam": np.float32(0.3), "perm": perm, "mask": box,
              "cutmix_lam": np.full((4,), 0.5, "float32")}
    clusters = np.array([0, 0, 1, 1], "int32")
    k2 = model.key_embedding(x["view2"])
    queue = keras.ops.convert_to_tensor(model.queue)
    got = _np(model.mixer.mix_loss(model, x["view1"], x["view2"], k2, queue, clusters, params))
    v2p = x["view2"][perm]
    k1p = _np(model.key_embedding(x["view1"]))[perm]
    expected = np.mean(_np(losses_lib.mixup_info_nce(
        model.query_embedding(0.3 * x["view1"] + 0.7 * v2p, training=True), k2, k1p, queue,
        0.3, TAU, normalize=False)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # ... and across clusters (0,2) (1,3): CutMix with λ = 0.5.
    perm = np.array([2, 3, 0, 1], "int32")
    params["perm"] = perm
    got = _np(model.mixer.mix_loss(model, x["view1"], x["view2"], k2, queue, clusters, params))
    mixed = box * x["view1"] + (1 - box) * x["view2"][perm]
    k1p = _np(model.key_embedding(x["view1"]))[perm]
    expected = np.mean(_np(losses_lib.mixup_info_nce(
        model.query_embedding(mixed, training=True), k2, k1p, queue, 0.5, TAU,
        normalize=False)))
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def _puzzlemix_c_model():
    model = _model(mixer="puzzlemix_c", mixer_kwargs={"grid_size": 2}, num_samples=4,
                   num_clusters=2, odc_kwargs={"min_cluster_size": 1}, momentum=1.0)
    centroids = np.eye(2, 8, dtype="float32")  # two unit prototypes
    model.odc.centroids.assign(centroids)
    return model, centroids


def test_puzzlemix_c_saliency_is_the_cluster_ce_gradient():
    from keras_amix.training.backend import input_gradient

    model, centroids = _puzzlemix_c_model()
    views = _views()
    clusters = np.array([0, 1, 1, 0], "int32")
    got = _np(model.mixer.saliency(model, views["view1"], clusters))
    assert got.shape == (4, 8, 8, 1) and np.all(got >= 0) and got.max() > 0

    # The same CE written as -log softmax at the cluster, through the query encoder
    # in inference mode.
    def ce(x):
        logits = keras.ops.matmul(model.query_embedding(x, training=False),
                                  keras.ops.convert_to_tensor(centroids.T)) / TAU
        return -keras.ops.sum(keras.ops.log_softmax(logits)
                              * keras.ops.one_hot(clusters, 2))

    expected = np.abs(_np(input_gradient(ce, keras.ops.convert_to_tensor(views["view1"]))))
    np.testing.assert_allclose(got, expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-7)
    # Inference mode: each image's saliency depends on its own label only.
    other = _np(model.mixer.saliency(model, views["view1"], np.array([1, 1, 1, 0], "int32")))
    assert not np.allclose(other[0], got[0])
    np.testing.assert_allclose(other[1:], got[1:], rtol=1e-5, atol=1e-7)


def test_puzzlemix_c_mixes_view1_with_view2_by_both_saliencies():
    model, _ = _puzzlemix_c_model()
    model.odc.labels.assign(np.array([0, 1, 1, 0], "int32"))
    x = _views()
    x["ids"] = np.arange(4)
    (puzzle,) = model.mixer.layers()
    seen = {}
    sample = puzzle.sample_params

    def record(images, **kwargs):
        seen.update(kwargs)
        seen["params"] = sample(images, **kwargs)
        return seen["params"]

    puzzle.sample_params = record
    start = model.get_weights()
    terms = model.compute_losses(x)
    after = model.get_weights()
    # The saliencies see the query encoder's BatchNorm statistics as the step left
    # them after eq. 2's forward of view 1 (training mode), before the mixup term.
    model.set_weights(start)
    model.query_embedding(x["view1"], training=True)
    clusters = np.array([0, 1, 1, 0], "int32")
    for key, view in (("saliency", "view1"), ("saliency_b_unpaired", "view2")):
        np.testing.assert_allclose(_np(seen[key]),
                                   _np(model.mixer.saliency(model, x[view], clusters)),
                                   rtol=1e-4, atol=1e-7)
    model.set_weights(after)
    # The term is eq. 4 on PuzzleMix's mixed images, λ = each mask's mean.
    from keras_amix import losses as losses_lib

    params = seen["params"]
    perm = _np(params["perm"])
    k2 = model.key_embedding(x["view2"])
    k1p = _np(model.key_embedding(x["view1"]))[perm]
    mixed = puzzle.mix_images(x["view1"], x["view2"][perm], params)
    expected = np.mean(_np(losses_lib.mixup_info_nce(
        model.query_embedding(mixed, training=True), k2, k1p,
        keras.ops.convert_to_tensor(model.queue), params["lam"], TAU, normalize=False)))
    np.testing.assert_allclose(_np(terms["mix"]), expected, rtol=1e-4)


def test_inter_intra_mixup_alpha_large_cutmix_alpha_small():
    """Fig. 2c: MixUp with a large α within a cluster, CutMix with a small α
    across; each α is its own argument, serialised, and checked by name."""
    strategy = moco_mixing.InterIntra()
    assert (strategy.alpha, strategy.cutmix_alpha) == (2.0, 0.2)
    model = _model(mixer=moco_mixing.InterIntra(alpha=3.0, cutmix_alpha=0.5), num_samples=4,
                   num_clusters=2, odc_kwargs={"min_cluster_size": 1})
    assert model.mixer._cutmix.alpha == 0.5
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model.mixer))
    assert (again.alpha, again.cutmix_alpha) == (3.0, 0.5)
    with pytest.raises(ValueError, match=r"InterIntra `cutmix_alpha` must be > 0.*=0"):
        moco_mixing.InterIntra(cutmix_alpha=0)


def test_inter_intra_needs_num_samples_and_ids():
    with pytest.raises(ValueError, match="num_samples"):
        _model(mixer="inter_intra")
    model = _model(mixer="inter_intra", num_samples=4, num_clusters=2,
                   odc_kwargs={"min_cluster_size": 1})
    with pytest.raises(ValueError, match="'ids'"):
        model.compute_losses(_views())
