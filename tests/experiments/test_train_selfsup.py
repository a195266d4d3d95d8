"""The self-supervised binary end to end (subprocesses) and its config handling."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments import train_selfsup as tss

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module, args, backend="tensorflow", check=True):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-5000:])
    return proc


EMBEDDINGS_CHECK = (
    "import numpy as np, tensorflow as tf, sys;"
    "m = tf.saved_model.load(sys.argv[1]);"
    "x = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3)).astype('uint8');"
    "e = m.serve(tf.constant(x))['output'].numpy();"
    "assert e.shape == (3, int(sys.argv[2])), e.shape;"
    "assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5);"
    "print('ok')"
)


@pytest.mark.backend_independent
def test_amix_c_pretrain_export_then_linear_eval_end_to_end(tmp_path, resolve_flags):
    """AMix-C through the binary (compiled, as a user's run): ODC's k-means
    start, its change ratio and the mask std logged, every output written;
    the SavedModel serves unit-norm embeddings in a fresh process; linear
    evaluation reads the encoder file and the SavedModel. (MoCo v2 runs through
    the binary in test_resume.py; every method's model is built from its flags
    below, and MoCo v2 with each static mixup trains in tests/models/test_moco.py.)"""
    workdir = str(tmp_path / "ssl")
    proc = _run("experiments.train_selfsup", ["--smoke", "--method=amix_c",
                                              f"--workdir={workdir}"])
    assert "k-means" in proc.stdout
    for name in ("config.json", "metrics.json", "model.keras", "encoder.keras", "export",
                 "tensorboard", "history.csv", "masks.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["method"] == "amix_c" and config["alpha"] == tss.DEFAULT_ALPHA["amix_c"]
    assert config["num_clusters"] == 4
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert len(metrics["history"]["loss_mix"]) == config["epochs"]
    assert all(v > 0 for v in metrics["history"]["loss_mix"])  # the mixup term is on
    for name in ("loss_phi", "mask_std", "odc_change_ratio", "loss_head"):
        assert np.isfinite(metrics["history"][name][-1]), name

    # The SavedModel maps uint8 images of another size to unit-norm pooled
    # features (width 8: 8 * 8 = 64 channels at stage 4), in a fresh process.
    out = subprocess.run([sys.executable, "-c", EMBEDDINGS_CHECK,
                          os.path.join(workdir, "export"), "64"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]

    # Linear evaluation reads the encoder file the pretraining wrote: the
    # binary's `main` (its flags resolved, then `evaluate`), in this process.
    from experiments import linear_eval

    linear = str(tmp_path / "linear")
    cfg = resolve_flags(linear_eval, ["--smoke", f"--encoder={workdir}/encoder.keras",
                                      "--run_eagerly"])
    linear_eval.evaluate(cfg, linear)
    result = json.load(open(os.path.join(linear, "metrics.json")))
    assert 0.0 <= result["top1"] <= 1.0 and result["feature_dim"] == 64
    assert len(result["history"]["val_top1"]) == 2
    assert os.path.exists(os.path.join(linear, "classifier.keras"))

    # ... and the SavedModel (it normalises [0, 1] images itself; unit-norm features).
    cfg = linear_eval.Config(encoder=os.path.join(workdir, "export"), image_size=16, epochs=1,
                             batch_size=16, per_class_limit=4, test_per_class_limit=2,
                             trust_saved_model=True)
    result = linear_eval.evaluate(cfg, str(tmp_path / "linear_sm"))
    assert result["feature_dim"] == 64 and 0.0 <= result["top1"] <= 1.0


@pytest.mark.own_backend("jax")
def test_inter_intra_trains_on_jax(tmp_path):
    """The binary on JAX with its tf.data two-view pipeline and sample ids (ODC).
    (AMix-C runs the binary on JAX without TensorFlow in test_input_numpy.py;
    AMix-I's model trains in the JAX pass of tests/models/test_amix_ssl.py.)"""
    workdir = str(tmp_path / "inter_intra")
    _run("experiments.train_selfsup", ["--smoke", "--method=inter_intra", "--epochs=1",
                                       "--export=false", f"--workdir={workdir}"],
         backend="jax")
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert np.isfinite(metrics["history"]["loss_mix"][-1])


@pytest.mark.backend_independent
def test_bad_flags_fail_before_training(tmp_path):
    proc = _run("experiments.train_selfsup", ["--method=puzzlemix", f"--workdir={tmp_path}"],
                check=False)
    assert proc.returncode != 0
    assert "--method" in proc.stderr and "puzzlemix" in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "config.json"))


@pytest.mark.backend_independent
def test_another_dataset_takes_its_own_view_size_and_stem(tmp_path, resolve_flags):
    """As train_supervised: the demo preset's 32 px views are digits'; an STL-10
    sized .npz trains at 96 px with the ImageNet stem, unless the flags say."""
    path = str(tmp_path / "d.npz")
    np.savez(path, x_train=np.zeros((4, 96, 96, 3), np.uint8), y_train=np.arange(4) % 2)

    def resolve(*argv):
        return resolve_flags(tss, argv)

    cfg = resolve(f"--dataset={path}")
    assert (cfg.image_size, cfg.stem) == (96, "imagenet")
    cfg = resolve(f"--dataset={path}", "--image_size=32")
    assert (cfg.image_size, cfg.stem) == (32, "cifar")
    with pytest.raises(ValueError, match=r"`--train_split` .*\['train'\]; received 'unlabelled'"):
        resolve(f"--dataset={path}", "--train_split=unlabelled")
    assert resolve("--preset=stl10").image_size == 96  # the preset's own data set


@pytest.mark.parametrize("changes,match", [
    (dict(method="nope"), "--method"),
    (dict(method="comixup"), "--method"),  # needs saliency / many-to-many: not cross-view
    (dict(queue_size=32, batch_size=64), "--queue_size"),
    (dict(temperature=0.0), "--temperature"),
    (dict(temperature=-0.1), "--temperature"),
    (dict(projection_dim=0), "--projection_dim"),
    (dict(hidden_dim=-1), "--hidden_dim"),
    (dict(key_momentum=1.5), "--key_momentum"),
    (dict(alpha=0.0), "--alpha"),
    (dict(method="mixup", batch_size=1, queue_size=8), "--batch_size"),
    (dict(export_embedding="logits"), "--export_embedding"),
    (dict(batch_size=64, bn_group=24), "`--bn_group` must divide `--batch_size` \\(64\\)"),
    (dict(method="amix_i", mix_loss="ce+bce"), "variant='cluster'"),
    (dict(method="amix_c", mix_loss="ce+nope"), "mix_loss"),
    (dict(method="mixup", mix_loss="bce"), "--mix_loss"),
    (dict(method="mixup", num_clusters=10), "--num_clusters"),
    (dict(method="amix_c", num_clusters=1), "--num_clusters"),
])
def test_validate_rejects_bad_configs(changes, match):
    cfg = dataclasses.replace(tss.Config(), **changes)
    with pytest.raises(ValueError, match=match):
        tss.validate(cfg)


@pytest.mark.backend_independent
def test_bn_group_default_is_the_largest_divisor_up_to_32(resolve_flags):
    """MoCo's split BN: groups of 32 as the official 8-GPU MoCo v2 (256 / 8),
    smaller where the batch asks, one BatchNorm where no group of 4+ fits."""
    assert [tss.default_bn_group(b) for b in (256, 128, 64, 100, 48, 8, 7, 6, 2)] == \
        [32, 32, 32, 25, 24, 4, 0, 0, 0]
    assert resolve_flags(tss, []).bn_group == 32  # the demo's batch of 64
    assert resolve_flags(tss, ["--smoke"]).bn_group == 4  # batch 8
    assert resolve_flags(tss, ["--bn_group=0"]).bn_group == 0
    assert resolve_flags(tss, ["--batch_size=48", "--bn_group=8"]).bn_group == 8


def test_every_method_builds_the_matching_model():
    for method in tss.METHODS:
        cfg = dataclasses.replace(tss.Config(), method=method, width=8, image_size=8,
                                  hidden_dim=8, projection_dim=4, queue_size=16, batch_size=8,
                                  alpha=tss.DEFAULT_ALPHA.get(method), bn_group=4)
        tss.validate(cfg)
        model = tss.build_model(cfg, num_samples=256, num_classes=10)
        if method in tss.AMIX_METHODS:
            assert model.variant == tss.AMIX_METHODS[method] and model.mixer is None
        else:
            assert (model.mixer and model.mixer.name) == (None if method == "mocov2" else method)
        assert (model.odc is not None) == (method in tss.CLUSTER_METHODS)
        assert model.queue_size == 16 and model.temperature == cfg.temperature
        assert model.bn_splits == 2  # groups of 4 in a batch of 8
