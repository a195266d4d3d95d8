"""The README's Python examples run as written (a user's first contact with the
API), shortened: `keras_amix.data.load` keeps its first 64 images and each of
the three `fit`s trains one epoch, so one step each (the examples' 3 epochs of
22 steps would cost minutes; what is checked is that the API calls fit
together)."""

import os
import re

import keras
import numpy as np
import pytest

import keras_amix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.backend_independent  # the examples export SavedModels (TensorFlow)
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write export/ and ssl_export/
    load, fit = keras_amix.data.load, keras.Model.fit
    monkeypatch.setattr(keras_amix.data, "load",
                        lambda *args, **kwargs: load(*args, **kwargs).take(64))
    monkeypatch.setattr(keras.Model, "fit",
                        lambda model, *args, **kwargs: fit(model, *args, **{**kwargs, "epochs": 1}))
    rng = np.random.default_rng(0)
    namespace = {  # what the last example's two lines take as given
        "images": rng.random((4, 32, 32, 3), dtype=np.float32),
        "one_hot_labels": np.eye(10, dtype=np.float32)[[0, 1, 2, 3]],
    }
    for block in _readme_python_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
    assert os.path.exists(tmp_path / "export" / "saved_model.pb")
    assert os.path.exists(tmp_path / "ssl_export" / "saved_model.pb")
    assert int(namespace["amix"].odc.labels.shape[0]) == 64  # ODC over the shortened split
    assert namespace["mixed_images"].shape == (4, 32, 32, 3)
    np.testing.assert_allclose(np.sum(namespace["soft_labels"], axis=-1), 1.0, rtol=1e-5)
