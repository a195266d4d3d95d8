import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_amix.backbones import resnet
from keras_amix.export import export_saved_model

BACKEND = keras.backend.backend()
needs_export_backend = pytest.mark.skipif(
    BACKEND not in ("tensorflow", "jax"), reason="SavedModel export needs TF or JAX"
)

MEAN = [0.5, 0.4, 0.3]
STD = [0.2, 0.25, 0.3]

# Loads SavedModels in a fresh TF process (no Keras, no keras_amix) and runs
# each requested call; inputs and outputs travel as .npz files.
_SERVE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    inputs = dict(np.load(sys.argv[1]))
    results, loaded = {}, {}
    for key, x in inputs.items():
        path, how, _ = key.split("|")
        if path not in loaded:
            loaded[path] = tf.saved_model.load(path)
        obj = loaded[path]
        if how == "serve":
            out = obj.serve(tf.constant(x))
        else:
            out = obj.signatures[how](images=tf.constant(x))
        results[key] = out["output"].numpy()
    np.savez(sys.argv[2], **results)
    """
)


def _serve_in_subprocess(tmp_path, calls):
    """calls: list of (export_path, "serve" | signature name, images)."""
    inputs = {f"{path}|{how}|{i}": x for i, (path, how, x) in enumerate(calls)}
    in_file, out_file = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(in_file, **inputs)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(in_file), str(out_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(out_file)
    return [out[key] for key in inputs]


def _tiny_classifier(num_classes=5):
    backbone = resnet(18, width=8)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(num_classes)(x))
    # Non-trivial BN statistics so that a train/inference mix-up would show.
    for var in model.non_trainable_weights:
        var.assign(np.random.default_rng(0).uniform(0.5, 1.5, var.shape).astype("float32"))
    return model


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@needs_export_backend
def test_probabilities_match_predict_for_uint8_and_float(tmp_path):
    model = _tiny_classifier()
    path = str(tmp_path / "export")
    assert export_saved_model(model, path, mean=MEAN, std=STD) == path
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (n, 8, 8, 3)).astype("uint8") for n in (1, 3)]
    calls = []
    for images in batches:
        calls += [
            (path, "serve", images),
            (path, "serve", images.astype("float32") / 255.0),
            (path, "serve_uint8", images),
            (path, "serving_default", images.astype("float32") / 255.0),
        ]
    served = _serve_in_subprocess(tmp_path, calls)
    for b, images in enumerate(batches):
        normalised = ((images / 255.0 - np.array(MEAN)) / np.array(STD)).astype("float32")
        expected = _softmax(model.predict(normalised, verbose=0).astype("float64"))
        for out in served[4 * b : 4 * b + 4]:
            assert out.shape == (len(images), 5)
            np.testing.assert_allclose(out, expected, atol=1e-5)
            np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


@needs_export_backend
def test_resize_logits_and_embeddings(tmp_path):
    model = _tiny_classifier()
    backbone = resnet(18, width=8, name="encoder")  # rank-4 output: pooled first
    logits_path = str(tmp_path / "logits")
    emb_path = str(tmp_path / "emb")
    export_saved_model(model, logits_path, output="logits", image_size=(8, 8), input_scale=100.0)
    export_saved_model(backbone, emb_path, output="embeddings", image_size=8, mean=0.5, std=0.25)
    images = np.random.default_rng(2).integers(0, 100, (2, 16, 12, 3)).astype("uint8")
    logits, emb = _serve_in_subprocess(
        tmp_path, [(logits_path, "serve", images), (emb_path, "serve", images)]
    )
    resized = keras.ops.convert_to_numpy(
        keras.ops.image.resize(images.astype("float32") / 100.0, (8, 8))
    )
    np.testing.assert_allclose(logits, model.predict(resized, verbose=0), atol=1e-5)
    assert not np.allclose(logits.sum(-1), 1.0)
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(images.astype("float32") / 255.0, (8, 8)))
    pooled = backbone.predict((x - 0.5) / 0.25, verbose=0).mean(axis=(1, 2))
    expected = pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)
    assert emb.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, expected, atol=1e-5)


def _archive_class():
    return type(keras.export.ExportArchive())


def _snapshot(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, folder)] = f.read()
    return files


@needs_export_backend
@pytest.mark.parametrize("overwrite", [False, True])
def test_failed_export_keeps_existing_export_and_leaves_no_temp(tmp_path, monkeypatch, overwrite):
    model = _tiny_classifier()
    path = tmp_path / "export"
    export_saved_model(model, path)
    before = _snapshot(path)
    assert "saved_model.pb" in before
    if not overwrite:
        target = tmp_path / "fresh"
    else:
        target = path

    def failing_write_out(self, filepath, **kwargs):
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(_archive_class(), "write_out", failing_write_out)
    with pytest.raises(RuntimeError, match="disk full"):
        export_saved_model(model, target, overwrite=overwrite)
    assert _snapshot(path) == before
    assert sorted(os.listdir(tmp_path)) == ["export"]


@needs_export_backend
def test_overwrite_replaces_only_with_complete_export(tmp_path):
    path = tmp_path / "export"
    first, second = _tiny_classifier(3), _tiny_classifier(4)
    export_saved_model(first, path)
    export_saved_model(second, path, overwrite=True, output="logits")
    import tensorflow as tf  # loading in-process is enough here

    loaded = tf.saved_model.load(str(path))  # keep a reference: it owns the variables
    out = loaded.serve(tf.zeros((2, 8, 8, 3), tf.uint8))["output"].numpy()
    np.testing.assert_allclose(
        out, second.predict(np.zeros((2, 8, 8, 3), "float32"), verbose=0), atol=1e-5
    )
    assert os.listdir(tmp_path) == ["export"]


class _NoWork:
    def __new__(cls, *args, **kwargs):
        raise AssertionError("export started before arguments were validated")


@needs_export_backend
@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(output="scores"), ["output", "scores", "probabilities"]),
        (dict(mean=[0.5, 0.5], std=[0.2, 0.2, 0.2]), ["mean", "std", "same length"]),
        (dict(mean=[0.5, 0.5], std=[0.2, 0.2]), ["3 input channels"]),
        (dict(std=[0.2, 0.0, 0.2]), ["std", "positive"]),
        (dict(image_size=(8,)), ["image_size"]),
        (dict(input_scale=0), ["input_scale"]),
    ],
)
def test_bad_arguments_raise_before_any_work(tmp_path, monkeypatch, kwargs, words):
    model = _tiny_classifier()
    monkeypatch.setattr(keras.export, "ExportArchive", _NoWork)
    with pytest.raises(ValueError) as info:
        export_saved_model(model, tmp_path / "export", **kwargs)
    for word in words:
        assert word in str(info.value)
    assert os.listdir(tmp_path) == []


@needs_export_backend
def test_existing_path_without_overwrite_raises_before_work(tmp_path, monkeypatch):
    model = _tiny_classifier()
    path = tmp_path / "export"
    path.mkdir()
    (path / "keep.txt").write_text("old")
    monkeypatch.setattr(keras.export, "ExportArchive", _NoWork)
    with pytest.raises(ValueError, match="already exists"):
        export_saved_model(model, path)
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (path / "keep.txt").read_text() == "old"


@pytest.mark.skipif(BACKEND in ("tensorflow", "jax"), reason="other backends only")
def test_unsupported_backend_raises_clear_error(tmp_path):
    with pytest.raises(ValueError, match="tensorflow or jax"):
        export_saved_model(_tiny_classifier(), tmp_path / "export")


@needs_export_backend
def test_non_finite_weights_are_refused_before_any_work(tmp_path, monkeypatch):
    model = _tiny_classifier()
    dense = model.layers[-1]
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    kernel[0, 0] = np.nan
    dense.kernel.assign(kernel)
    monkeypatch.setattr(keras.export, "ExportArchive", _NoWork)
    with pytest.raises(ValueError, match="non-finite|NaN") as info:
        export_saved_model(model, tmp_path / "export")
    assert dense.kernel.path in str(info.value)
    assert os.listdir(tmp_path) == []


@needs_export_backend
def test_export_has_the_modes_of_a_plain_mkdir(tmp_path):
    umask = os.umask(0o022)
    try:
        path = export_saved_model(_tiny_classifier(), tmp_path / "export")
    finally:
        os.umask(umask)
    modes = {os.path.relpath(os.path.join(root, name), path): os.stat(os.path.join(root, name)).st_mode & 0o777
             for root, dirs, files in os.walk(path) for name in dirs + files}
    assert os.stat(path).st_mode & 0o777 == 0o755
    assert modes["saved_model.pb"] == 0o644 and modes["variables"] == 0o755
    assert set(modes.values()) <= {0o755, 0o644}
