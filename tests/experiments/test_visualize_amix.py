"""experiments/visualize_amix.py on tiny checkpoints built (untrained) in the test."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from experiments import visualize_amix as va
from keras_amix import backbones, models

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 16


def _npz(path, n=6, classes=3):
    rng = np.random.default_rng(0)
    np.savez(path, x_test=rng.integers(0, 255, (n, 12, 12, 3)).astype("uint8"),
             y_test=rng.integers(0, classes, n))
    return str(path)


def _save(model, folder):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.keras")
    model.save(path)
    return path


def _amix_checkpoint(folder, classes=3):
    backbone = backbones.resnet(18, width=8, input_shape=(SIZE, SIZE, 3))
    return _save(models.AMixClassifier(backbone, classes, mix_block="amix", seed=1), folder)


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_visualize_writes_png_beside_checkpoint_with_backbone_size(tmp_path):
    checkpoint = _amix_checkpoint(str(tmp_path / "run"))
    data = _npz(tmp_path / "tiny.npz")
    out, stats = va.visualize(checkpoint, dataset=data, pairs=3, lams=(0.2, 0.8), seed=1)
    assert out == str(tmp_path / "run" / "amix_masks.png")
    width, height = _png_size(out)
    assert width > height > 100  # 6 columns, 3 rows
    # The 12x12 images were resized to the backbone's 16x16 input.
    assert stats["image_size"] == (SIZE, SIZE) and stats["dataset"] == data
    assert set(stats["lams"]) == {"0.2", "0.8"}
    for values in stats["lams"].values():
        assert 0.0 <= values["mask_mean"] <= 1.0 and values["mask_spatial_std"] >= 0.0


@pytest.mark.backend_independent
@pytest.mark.parametrize("tensorflow", [True, False])
def test_pairs_come_from_every_class_of_a_split_grouped_by_class(tmp_path, monkeypatch,
                                                                 tensorflow):
    """8 classes of 50 images in class order: the first 256 images hold 6
    classes; the pool holds the first 32 of each class, so all 8."""
    import importlib.util

    classes = np.repeat(np.arange(8), 50)
    path = str(tmp_path / "grouped.npz")
    images = np.broadcast_to((classes * 30).astype("uint8")[:, None, None, None], (400, 4, 4, 3))
    np.savez(path, x_test=images, y_test=classes)
    if not tensorflow:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "tensorflow" else find_spec(name, *a))
    pool, _ = va.load_images(path, "test", None, 4, va.POOL_SIZE, seed=0)
    values = np.unique(np.round(pool[:, 0, 0, 0], 4))
    assert len(pool) == va.POOL_SIZE and len(values) == 8
    # Not grouped by class (a shuffled split): the first 256 images, as before.
    np.savez(path, x_test=images[::-1][np.argsort(np.arange(400) % 50, kind="stable")],
             y_test=classes[::-1][np.argsort(np.arange(400) % 50, kind="stable")])
    assert va._pool_per_class(np.load(path)["y_test"]) is None


def test_dataset_defaults_to_the_runs_config_json(tmp_path):
    checkpoint = _amix_checkpoint(str(tmp_path / "run"))
    data = _npz(tmp_path / "tiny.npz")
    with open(tmp_path / "run" / "config.json", "w") as f:
        json.dump({"dataset": data, "data_dir": None, "image_size": SIZE}, f)
    out, stats = va.visualize(checkpoint, pairs=2, lams=(0.5,), out=str(tmp_path / "m.png"),
                              stretch_masks=True)
    assert stats["dataset"] == data and os.path.isfile(out)


def test_not_an_amix_checkpoint_is_a_clear_error(tmp_path):
    backbone = backbones.resnet(18, width=8, input_shape=(SIZE, SIZE, 3))
    checkpoint = _save(models.MixupClassifier(backbone, 3), str(tmp_path))
    with pytest.raises(ValueError, match=r"AMixClassifier.*MixupClassifier"):
        va.visualize(checkpoint, dataset=_npz(tmp_path / "d.npz"), pairs=2)
    with pytest.raises(ValueError, match=r"`--checkpoint`.*missing\.keras"):
        va.visualize(str(tmp_path / "missing.keras"), pairs=2)


def test_bad_arguments(tmp_path):
    checkpoint = _amix_checkpoint(str(tmp_path / "run"))
    data = _npz(tmp_path / "tiny.npz", n=3)
    with pytest.raises(ValueError, match=r"`--pairs`.*1"):
        va.visualize(checkpoint, dataset=data, pairs=1)
    with pytest.raises(ValueError, match=r"`--pairs`=4.*3"):
        va.visualize(checkpoint, dataset=data, pairs=4)
    with pytest.raises(ValueError, match=r"`lams`.*1\.2"):
        va.visualize(checkpoint, dataset=data, pairs=2, lams=(0.5, 1.2))


@pytest.mark.backend_independent  # one subprocess suffices; the in-process tests cover jax
def test_command_line(tmp_path):
    checkpoint = _amix_checkpoint(str(tmp_path / "run"))
    out = str(tmp_path / "figs" / "masks.png")
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.visualize_amix", f"--checkpoint={checkpoint}",
         f"--dataset={_npz(tmp_path / 'tiny.npz')}", "--pairs=2", "--lams=0.3,0.7",
         f"--out={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "λ=0.3: mask mean" in proc.stdout and "λ=0.7: mask mean" in proc.stdout
    _png_size(out)
