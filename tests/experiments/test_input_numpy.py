"""`--input`: the TF-free .npz input path of train_supervised (common.input_kind)."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import common
from experiments import train_supervised as ts
from keras_amix.data import arrays
from keras_amix.data import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Runs a module as `python -m` would, with TensorFlow unimportable.
NO_TF = ("import sys; sys.modules['tensorflow'] = None; import runpy; "
         "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


@pytest.fixture
def npz(tmp_path):
    """40 8x8 training and 12 test images of 4 classes."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "tiny.npz")
    np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(40) % 4, x_test=rng.integers(0, 256, (12, 8, 8, 3),
                                                             dtype=np.uint8),
             y_test=np.arange(12) % 4)
    return path


def _cfg(**kwargs):
    return dataclasses.replace(ts.Config(), **dict(dict(image_size=8, batch_size=8), **kwargs))


def test_auto_picks_numpy_only_without_tensorflow(npz, monkeypatch):
    assert common.tensorflow_available()  # this process has it
    assert common.input_kind(_cfg(dataset=npz)) == "tfdata"
    assert common.input_kind(_cfg(dataset=npz, input="numpy")) == "numpy"
    assert common.input_kind(_cfg(dataset="digits")) == "tfdata"
    with pytest.raises(ValueError, match="--input=numpy"):
        common.input_kind(_cfg(dataset="digits", input="numpy"))
    with pytest.raises(ValueError, match="--input=numpy"):
        common.input_kind(_cfg(dataset=os.path.dirname(npz), input="numpy"))  # a folder
    monkeypatch.setattr(common, "tensorflow_available", lambda: False)
    assert common.input_kind(_cfg(dataset=npz)) == "numpy"
    for name in ("auto", "tfdata"):
        with pytest.raises(ValueError, match=f"--input={name}.*TensorFlow"):
            common.input_kind(_cfg(dataset="digits", input=name))
    common.check_environment(_cfg(dataset=npz, export=False))
    with pytest.raises(ValueError, match="--noexport"):
        common.check_environment(_cfg(dataset=npz))
    with pytest.raises(ValueError, match="--input"):
        ts.CHECKS["input"]("input", "arrays")


def test_datasets_from_the_npz(npz):
    cfg = _cfg(dataset=npz, input="numpy", epochs=3, per_class_limit=5, max_train_examples=16,
               test_per_class_limit=2)
    train, test, info, steps = common.datasets(cfg, initial_epoch=1)
    assert isinstance(train, arrays.ArrayBatches) and isinstance(test, arrays.ArrayBatches)
    assert info.num_classes == 4 and info.mean == registry.IMAGENET_MEAN
    assert steps == train.steps_per_epoch == 2 and len(train) == 2 * 2  # epochs 1 and 2
    x, y = train[0]
    assert x.shape == (8, 8, 8, 3) and y.shape == (8, 4)
    # 5 per class of the first 20, then the first 16; the test set: 2 per class.
    assert len(train.labels) == 16 and np.bincount(train.labels).tolist() == [4, 4, 4, 4]
    assert test.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and len(test) == 1
    x_test = common.first_images(test, 3)
    images, _ = arrays.load_npz(npz)[0]["test"]
    np.testing.assert_allclose(x_test, (images[:3] / 255.0 - info.mean) / info.std, atol=1e-5)
    for bad, match in ((dict(image_size=16), "image_size"), (dict(augment="imagenet"), "augment"),
                       (dict(test_split="val"), "test_split"), (dict(batch_size=64), "batch_size")):
        with pytest.raises(ValueError, match=match):
            common.datasets(dataclasses.replace(cfg, **bad))


@pytest.mark.own_backend("jax")
@pytest.mark.training
def test_trains_without_tensorflow(npz, tmp_path):
    workdir = str(tmp_path / "run")
    # An AMix ablation row (Table 8), compiled (jax.jit) as a user's run on the
    # device machine is.
    args = ["experiments.train_supervised", f"--dataset={npz}", "--epochs=1", "--batch_size=8",
            "--image_size=8", "--width=8", "--method=amix", "--mix_block=attention=cross",
            "--phi_lr=0.05", "--warmup_epochs=0"]
    # --input=auto: numpy, as TensorFlow is missing.
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", NO_TF, *args, "--noexport",
                           f"--workdir={workdir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    print(f"end-to-end run without TensorFlow: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "no TensorBoard logs" in proc.stdout
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert 0.0 <= metrics["final_top1"] <= 1.0 and len(metrics["history"]["val_top1"]) == 1
    assert json.load(open(os.path.join(workdir, "config.json")))["input"] == "auto"
    assert not os.path.exists(os.path.join(workdir, "tensorboard"))
    # --export needs TensorFlow: refused before training, as a usage error.
    proc = subprocess.run([sys.executable, "-c", NO_TF, *args,  # --export by default
                           f"--workdir={tmp_path / 'other'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--noexport" in proc.stderr, proc.stderr[-3000:]
    assert not os.path.exists(tmp_path / "other")


@pytest.mark.own_backend("jax")
@pytest.mark.training
def test_selfsup_trains_without_tensorflow(npz, tmp_path):
    """AMix-C (two views, ODC's k-means first pass, the Mix Block+, masks.png)
    through train_selfsup with TensorFlow unimportable: the device machine's
    path (JAX, an .npz file, `TwoViewBatches`)."""
    workdir = str(tmp_path / "ssl")
    args = ["experiments.train_selfsup", "--method=amix_c", "--smoke", f"--dataset={npz}",
            "--image_size=8"]
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", NO_TF, *args, "--noexport",
                           f"--workdir={workdir}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "ODC: clusters initialised by k-means" in proc.stdout
    metrics = json.load(open(os.path.join(workdir, "metrics.json")))
    assert len(metrics["history"]["loss_nce"]) == 2 and np.isfinite(metrics["history"]["loss"]).all()
    assert metrics["odc"]["final_min"] >= 1  # K = 4 non-empty clusters
    assert os.path.exists(os.path.join(workdir, "masks.png"))
    assert os.path.exists(os.path.join(workdir, "encoder.keras"))
    proc = subprocess.run([sys.executable, "-c", NO_TF, *args,  # --export by default
                           f"--workdir={tmp_path / 'other'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--noexport" in proc.stderr, proc.stderr[-3000:]
    assert not os.path.exists(tmp_path / "other")


def test_truncating_a_split_ordered_by_class_is_refused(tmp_path):
    """`--max_train_examples` / `--max_test_examples` take the first examples:
    on a file ordered by class that is a few classes, refused with the flag to
    use instead; a class-balanced limit first makes the same truncation fine,
    and so does a split not grouped by class."""
    path = str(tmp_path / "sorted.npz")
    images = np.zeros((40, 8, 8, 3), np.uint8)
    np.savez(path, x_train=images, y_train=np.repeat(np.arange(4), 10),
             x_test=images[:12], y_test=np.repeat(np.arange(4), 3))
    splits, _ = arrays.load_npz(path)
    cfg = _cfg(dataset=path, input="numpy")
    with pytest.raises(ValueError, match=r"--max_train_examples`=16 keeps 2 of the 4 classes"
                                         r".*--per_class_limit"):
        common.array_split(cfg, splits, "train", "train_split", None, 16)
    with pytest.raises(ValueError, match=r"--max_test_examples`=6 keeps 2 of the 4.*"
                                         r"--test_per_class_limit"):
        common.array_split(cfg, splits, "test", "test_split", None, 6)
    _, labels = common.array_split(cfg, splits, "train", "train_split", 4, 16)
    assert np.bincount(labels).tolist() == [4, 4, 4, 4]
    _, labels = common.array_split(cfg, splits, "train", "train_split", None, 40)  # all of it
    assert len(labels) == 40
    # Not grouped by class (a shuffled order): the first 3 are a random subset, kept.
    _, labels = common.array_split(cfg, {"train": (images, np.arange(40) % 4)}, "train",
                                   "train_split", None, 3)
    assert labels.tolist() == [0, 1, 2]


def test_truncating_a_folder_ordered_by_class_is_refused_on_tfdata(tmp_path):
    """The same refusal on the tf.data path, from the folder's listing (no
    image decoded), for training and test splits alike."""
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b", "c"):
            os.makedirs(tmp_path / split / name)
            for i in range(count):
                Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(
                    tmp_path / split / name / f"{i}.png")
    cfg = _cfg(dataset=str(tmp_path), input="tfdata", epochs=1, max_train_examples=5)
    with pytest.raises(ValueError, match=r"--max_train_examples`=5 keeps 2 of the 3 classes"
                                         r".*--per_class_limit"):
        common.datasets(cfg)
    cfg = _cfg(dataset=str(tmp_path), input="tfdata", epochs=1, max_test_examples=2)
    with pytest.raises(ValueError, match=r"--max_test_examples`=2 keeps 1 of the 3.*"
                                         r"--test_per_class_limit"):
        common.datasets(cfg)
    cfg = _cfg(dataset=str(tmp_path), input="tfdata", epochs=1, per_class_limit=2,
               max_train_examples=5, batch_size=2)  # class-balanced first: fine
    assert common.datasets(cfg)[3] == 2  # 5 examples, batch 2: two full steps


def test_selfsup_two_view_arrays_follow_the_flags(npz):
    """`train_dataset` of an .npz with `--input=numpy`: TwoViewBatches with the
    class limit, ids for the ODC methods, and the centre-crop first pass."""
    from experiments import train_selfsup as tss

    cfg = dataclasses.replace(tss.Config(), dataset=npz, input="numpy", image_size=6,
                              batch_size=8, per_class_limit=3, epochs=2, method="amix_c",
                              num_clusters=4)
    ds, info, steps, n_train, first_pass = tss.train_dataset(cfg, initial_epoch=1)
    assert isinstance(ds, arrays.TwoViewBatches) and n_train == 12 and steps == 1
    assert len(ds) == 1  # epoch 1 only
    inputs, labels = ds[0]
    assert inputs["view1"].shape == (8, 6, 6, 3) and inputs["ids"].max() < 12
    batches = list(first_pass)
    assert [len(b[0]["ids"]) for b in batches] == [8, 4]
    np.testing.assert_array_equal(np.concatenate([b[0]["ids"] for b in batches]), np.arange(12))
    assert batches[0][0]["images"].shape == (8, 6, 6, 3)
    ds_mocov2 = tss.train_dataset(dataclasses.replace(cfg, method="mocov2"))[0]
    assert "ids" not in ds_mocov2[0][0]


def test_mask_picture_images_without_tensorflow(npz):
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import numpy as np\n"
            "from experiments import visualize_amix\n"
            f"images, info = visualize_amix.load_images({npz!r}, 'test', None, (8, 8), 4, 0)\n"
            "assert images.shape == (4, 8, 8, 3) and info.num_classes == 4\n"
            "print('mean', float(np.mean(images)))\n")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The same images as the tf.data path (this process has TensorFlow).
    from experiments import visualize_amix

    images, _ = visualize_amix.load_images(npz, "test", None, (8, 8), 4, 0)
    assert abs(float(proc.stdout.split()[-1]) - float(np.mean(images))) < 1e-5
