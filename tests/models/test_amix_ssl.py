import keras
import numpy as np
import pytest

from keras_amix import backbones
from keras_amix import losses as losses_lib
from keras_amix.models.amix_ssl import AMixSSL
from keras_amix.models.mix_loss_names import MIX_LOSS_TERMS, PAPER_MIX_LOSSES, parse_mix_loss

BACKEND = keras.backend.backend()
N = 8  # training-set size of the tiny ODC memory


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _views(n=4, size=16, seed=0, ids=True):
    rng = np.random.default_rng(seed)
    x = {"view1": rng.normal(size=(n, size, size, 3)).astype("float32"),
         "view2": rng.normal(size=(n, size, size, 3)).astype("float32")}
    if ids:
        x["ids"] = np.arange(n, dtype="int64") % N
    return x


def _model(variant="cluster", **kw):
    kw.setdefault("queue_size", 16)
    if variant == "cluster":
        kw.setdefault("num_samples", N)
        kw.setdefault("num_clusters", 2)
        kw.setdefault("odc_kwargs", {"min_cluster_size": 1})
    return AMixSSL(backbones.resnet(18, width=8), variant=variant, projection_dim=8,
                   hidden_dim=16, seed=1, **kw)


def _ids(variables):
    return {id(v) for v in variables}


def _params(n=4):
    return {"lam_theta": np.float32(0.3), "lam_phi": np.float32(0.6),
            "perm_theta": np.array([1, 2, 3, 0], "int32")[:n],
            "perm_phi": np.array([3, 0, 1, 2], "int32")[:n]}


def test_parse_mix_loss_names_every_paper_row():
    for row, name in PAPER_MIX_LOSSES.items():
        assert parse_mix_loss(name, "cluster", num_classes=10), row
    assert parse_mix_loss("ce+bce") == ("ce", "bce")
    assert set(t for name in PAPER_MIX_LOSSES.values() for t in name.split("+")) == set(
        MIX_LOSS_TERMS)


@pytest.mark.parametrize("name,message", [
    ("ce+foo", "distinct terms"), ("bce+bce", "distinct terms"),
    ("infonce+infonce_pl", "one infoNCE term"), ("", "joined string"),
])
def test_parse_mix_loss_rejects_bad_names(name, message):
    with pytest.raises(ValueError, match=message):
        parse_mix_loss(name, "cluster", num_classes=10)


def test_cluster_terms_need_the_cluster_variant_and_label_terms_need_classes():
    with pytest.raises(ValueError, match="variant='cluster'"):
        _model("instance", mix_loss="ce+bce")
    with pytest.raises(ValueError, match="num_classes"):
        _model("instance", mix_loss="infonce_l")
    with pytest.raises(ValueError, match="num_samples"):
        AMixSSL(backbones.resnet(18, width=8), variant="cluster", queue_size=16)
    with pytest.raises(ValueError, match="variant"):
        _model("clusters")
    with pytest.raises(ValueError, match="mixer"):
        _model("instance", mixer="mixup")


def test_defaults_are_the_papers_losses():
    assert _model("instance").mix_loss == "infonce+bce"
    assert _model("cluster").mix_loss == "ce+bce"


def test_cluster_variant_without_ids_is_rejected():
    model = _model("cluster")
    with pytest.raises(ValueError, match="'ids'"):
        model.compute_losses(_views(ids=False), mix_params=_params())


def test_mix_block_and_heads_are_trainable_key_encoder_is_not():
    model = _model("cluster")
    trainable = _ids(model.trainable_weights)
    assert _ids(model.mix_block.trainable_weights) <= trainable
    assert _ids(model.cluster_head.trainable_weights) <= trainable
    key_vars = (model.key_backbone.weights + model.key_proj_hidden.weights
                + model.key_proj_out.weights)
    assert not trainable & _ids(key_vars)
    assert not trainable & _ids(model.odc.weights)


def test_instance_mix_block_loss_is_eq4_plus_eq6():
    """AMix-I's φ loss: the mixup infoNCE (eq. 4) + the BCE (eq. 6) of the
    φ-mixed embedding, source a's positive k2[i], source b's k1[perm(i)]."""
    model = _model("instance")
    rng = np.random.default_rng(2)
    z, k1, k2 = (rng.normal(size=(4, 8)).astype("float32") for _ in range(3))
    z, k1, k2 = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (z, k1, k2))
    queue = _np(model.queue)
    perm, lam, tau = np.array([2, 3, 0, 1]), np.float32(0.6), 0.2

    def nce(q, k):
        logits = np.concatenate([[q @ k], queue @ q]) / tau
        return np.log(np.exp(logits).sum()) - logits[0]

    k_b = k1[perm]
    info = np.mean([lam * nce(z[i], k2[i]) + (1 - lam) * nce(z[i], k_b[i]) for i in range(4)])
    d = (np.sum(z * k2, 1) - np.sum(z * k_b, 1)) / tau
    bce = np.mean(lam * np.log1p(np.exp(-d)) + (1 - lam) * np.log1p(np.exp(d)))
    phi, head = model._mix_block_loss(z, k1, k2, queue, perm, lam, None, None)
    np.testing.assert_allclose(_np(phi), info + bce, rtol=1e-5)
    assert float(_np(head)) == 0.0
    terms = model.compute_losses(_views(ids=False), mix_params=_params())
    for name in ("nce", "mix", "phi", "mask"):
        assert np.isfinite(_np(terms[name])), name


def test_filtered_infonce_drops_negatives_of_both_sources_labels():
    """infoNCE (PL): queue keys that share a cluster with source a or b are not negatives."""
    model = _model("cluster", mix_loss="infonce_pl")
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 8)).astype("float32")
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    k1, k2 = (z[::-1].copy(), z.copy())
    queue = _np(model.queue)
    queue_labels = np.array([0, 1, 2, 0] * 4, "int32")
    model.queue_labels.assign(queue_labels)
    clusters = np.array([0, 1], "int32")
    perm = np.array([1, 0], "int32")
    lam = np.float32(0.7)
    phi, _ = model._mix_block_loss(z, k1, k2, queue, perm, lam, clusters, None)
    # Both samples pair clusters {0, 1}: only the label-2 keys remain negatives.
    keep = queue_labels == 2
    tau = 0.2

    def nce(q, k):
        logits = np.concatenate([[q @ k], queue[keep] @ q]) / tau
        return np.log(np.exp(logits).sum()) - logits[0]

    k_b = k1[perm]
    by_hand = np.mean([lam * nce(z[i], k2[i]) + (1 - lam) * nce(z[i], k_b[i]) for i in range(2)])
    np.testing.assert_allclose(_np(phi), by_hand, rtol=1e-5)


def test_cluster_ce_is_class_weighted_mixup_ce_on_pseudo_labels():
    model = _model("cluster", mix_loss="ce")
    model.odc.labels.assign(np.array([0, 0, 0, 1, 0, 0, 0, 0], "int32"))  # n = (7, 1)
    weights = _np(model.odc.class_weights())
    rng = np.random.default_rng(4)
    z = rng.normal(size=(2, 8)).astype("float32")
    clusters = np.array([0, 1], "int32")
    perm = np.array([1, 0], "int32")
    lam = 0.25
    phi, head = model._mix_block_loss(z, z, z, _np(model.queue), perm, lam, clusters, None)
    np.testing.assert_allclose(_np(phi), _cluster_ce_by_hand(model, z, weights, clusters, perm,
                                                             lam), rtol=1e-5)
    assert float(_np(head)) > 0


def _cluster_ce_by_hand(model, z, weights, clusters, perm, lam):
    """φ's class-weighted mixup CE(C) of the embeddings `z` through the cluster head."""
    logits = z @ _np(model.cluster_head.kernel) + _np(model.cluster_head.bias)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def wce(labels):
        w = weights[labels]
        return np.sum(w * -log_p[np.arange(len(labels)), labels]) / np.sum(w)

    return lam * wce(clusters) + (1 - lam) * wce(clusters[perm])


def test_cluster_head_reads_the_projection_before_its_normalisation():
    """As the official head: φ's CE(C) logits and the head's own CE read the
    key encoder's projection before the L2 normalisation (the infoNCE and BCE
    terms the normalised one); the head starts as normal(0.01) weights."""
    model = _model("cluster", mix_loss="ce")
    kernel = _np(model.cluster_head.kernel)
    assert kernel.std() < 0.03  # (glorot: about 0.45 for 8 -> 2)
    rng = np.random.default_rng(5)
    z_raw = 7.0 * rng.normal(size=(2, 8)).astype("float32")  # far from unit norm
    z = z_raw / np.linalg.norm(z_raw, axis=1, keepdims=True)
    clusters, perm, lam = np.array([0, 1], "int32"), np.array([1, 0], "int32"), 0.25
    phi, head = model._mix_block_loss(z, z, z, _np(model.queue), perm, lam, clusters, None,
                                      heads_read=(z_raw, z_raw))
    phi_unit, head_unit = model._mix_block_loss(z, z, z, _np(model.queue), perm, lam,
                                                clusters, None)
    weights = _np(model.odc.class_weights())
    np.testing.assert_allclose(_np(phi), _cluster_ce_by_hand(model, z_raw, weights, clusters,
                                                             perm, lam), rtol=1e-5)
    assert abs(float(_np(phi)) - float(_np(phi_unit))) > 1e-4
    assert abs(float(_np(head)) - float(_np(head_unit))) > 1e-4
    # In a step, the heads' input is the key projection before its normalisation.
    _, k, raw = model._key_forward(_views()["view1"])
    np.testing.assert_allclose(_np(k), _np(raw) / np.linalg.norm(_np(raw), axis=1,
                                                                  keepdims=True), rtol=1e-5)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="uses tf.GradientTape")
@pytest.mark.parametrize("variant,mix_loss", [("instance", None), ("cluster", None),
                                              ("cluster", "ce+infonce_pl+pbce")])
def test_gradient_routing(variant, mix_loss):
    """φ's losses reach only the Mix Block; θ's only the query encoder; the heads'
    only the heads; the key encoder nothing."""
    import tensorflow as tf

    model = _model(variant, mix_loss=mix_loss)
    x = _views()
    query = (model.backbone.trainable_weights + model.proj_hidden.trainable_weights
             + model.proj_out.trainable_weights)
    mix_block = model.mix_block.trainable_weights
    heads = model.cluster_head.trainable_weights if model.cluster_head else []
    with tf.GradientTape(persistent=True) as tape:
        terms = model.compute_losses(x, mix_params=_params())
    everything = model.trainable_weights
    expect = {"nce": query, "mix": query, "phi": mix_block, "mask": mix_block, "head": heads}
    for name, reached in expect.items():
        grads = tape.gradient(terms[name], everything)
        touched = {id(v) for v, g in zip(everything, grads)
                   if g is not None and float(tf.reduce_max(tf.abs(g))) > 0}
        if reached:
            assert touched, name
        assert touched <= _ids(reached), (name, len(touched - _ids(reached)))


@pytest.mark.training
@pytest.mark.parametrize("variant", ["instance",
                                     pytest.param("cluster", marks=pytest.mark.compiled)])
def test_fit_updates_queue_memory_and_evaluates(variant):
    model = _model(variant)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    x = _views(n=8)
    if variant == "cluster":
        model.initialize_clusters([(x["view1"], x["ids"])])
        before = _np(model.odc.features).copy()
    history = model.fit(x, batch_size=4, epochs=2, verbose=0)
    for name in ("loss", "loss_nce", "loss_mix", "loss_phi", "mask_loss", "mask_std"):
        assert np.isfinite(history.history[name][-1]), name
    assert int(_np(model.queue_ptr)) == 16 % 16
    if variant == "cluster":
        assert "odc_change_ratio" in history.history
        assert not np.allclose(_np(model.odc.features), before)
    logs = model.evaluate({"view1": x["view1"], "view2": x["view2"]}, batch_size=4,
                          verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])


def test_initialize_clusters_checks_ids_and_runs_once():
    model = _model("cluster")
    x = _views(n=8)
    with pytest.raises(ValueError, match="saw 4 of the 8"):
        model.initialize_clusters([(x["view1"][:4], x["ids"][:4])])
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        model.initialize_clusters([(x["view1"], x["ids"] + 5)])
    assert model.initialize_clusters([(x["view1"], x["ids"])])
    assert not model.initialize_clusters([(x["view1"], x["ids"])])
    with pytest.raises(ValueError, match="ODC memory"):
        _model("instance").initialize_clusters([])


def test_save_load_keeps_memory_queue_and_mix_block(tmp_path):
    model = _model("cluster", mix_loss="ce+infonce_pl")
    x = _views(n=8)
    model.initialize_clusters([(x["view1"], x["ids"])])
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    model.fit(x, batch_size=4, epochs=1, verbose=0)
    path = str(tmp_path / "amix_c.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AMixSSL) and loaded.mix_loss == "ce+infonce_pl"
    for a, b in ((model.odc.labels, loaded.odc.labels), (model.odc.centroids,
                 loaded.odc.centroids), (model.queue, loaded.queue),
                 (model.queue_labels, loaded.queue_labels)):
        np.testing.assert_array_equal(_np(a), _np(b))
    for a, b in zip(model.mix_block.weights, loaded.mix_block.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_allclose(_np(model(x["view1"])), _np(loaded(x["view1"])), rtol=1e-5,
                               atol=1e-6)


def test_split_bn_key_features_come_back_in_the_images_order():
    """With split BN (4 groups of a batch of 8) θ_k runs on the reordered batch
    (sample 0's group {0, 2}): the stage-3 features the Mix Block reads and the
    keys of sample 0 move with sample 2, not with sample 1, and match
    `key_embedding`'s keys."""
    model = AMixSSL(backbones.resnet(18, width=8, bn_splits=4), variant="instance",
                    projection_dim=8, hidden_dim=16, queue_size=16, seed=1)
    x = _views(n=8)["view1"]
    f, k, _ = (_np(t) for t in model._key_forward(x))
    np.testing.assert_allclose(k, _np(model.key_embedding(x, training=True)), atol=1e-5)
    for other, moves in ((1, False), (2, True)):
        changed = x.copy()
        changed[other] += 3.0
        f2, k2, _ = (_np(t) for t in model._key_forward(changed))
        assert (np.abs(f2[0] - f[0]).max() > 1e-4) == moves, other
        assert (np.abs(k2[0] - k[0]).max() > 1e-4) == moves, other
