"""Test configuration shared by the whole suite.

The suite runs once per Keras backend, one process each (see scripts/test.sh).
Tests marked ``backend_independent`` exercise TensorFlow-only code (tf.data,
SavedModel export, MirroredStrategy); they run in the TensorFlow process only.
Tests marked ``own_backend(name)`` run their work in a subprocess on the
backend they name (e.g. a JAX run with TensorFlow hidden): the backend of the
test process does not matter, so they run once, in the pass of the backend
they name, instead of once per pass (this also splits the slow subprocess
runs between the two passes). Tests marked ``training`` are skipped under
torch, where the layers, mixers, losses and the training step are tested.

Models compiled in a test run their `fit` / `evaluate` / `predict` steps
eagerly unless the test is marked ``compiled``: tracing a tiny model's step
(TF graph, XLA under JAX) costs about three times the few steps it then runs.
The compiled paths stay covered by the tests marked ``compiled`` (one per
model family and backend) and by every subprocess run of the binaries, which
compile as a user's run does.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# One XLA compilation cache per test run, shared by both xdist workers and by
# every JAX subprocess a test starts (they inherit this environment): JAX
# compiles each weight initialiser and step once per process, and most of a
# tiny JAX run is that compilation (48 s -> 15 s for the AMix-C data-parallel
# script on a warm cache). Set before Keras imports JAX; scripts/test.sh sets
# one directory for all of its passes.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="keras-amix-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backend_independent: TF-side code; runs in the tensorflow process only"
    )
    config.addinivalue_line(
        "markers", "own_backend(name): runs a subprocess on backend `name`; runs in that pass only"
    )
    config.addinivalue_line(
        "markers", "training: trains a model; runs on tensorflow and jax, not torch"
    )
    config.addinivalue_line(
        "markers", "compiled: model steps run compiled (tf.function / jax.jit), not eagerly"
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        own = item.get_closest_marker("own_backend")
        if own is not None:
            if len(own.args) != 1:
                raise ValueError(f"{item.nodeid}: `own_backend` takes the subprocess's "
                                 f"backend name, e.g. own_backend('jax'); received {own.args}.")
            (backend,) = own.args
            if BACKEND != backend:
                item.add_marker(pytest.mark.skip(
                    reason=f"runs a subprocess on {backend}: runs in the {backend} pass"))
        elif item.get_closest_marker("backend_independent") and BACKEND != "tensorflow":
            item.add_marker(pytest.mark.skip(reason="TF-side test: runs in the tensorflow process"))
        if item.get_closest_marker("training") and BACKEND not in ("tensorflow", "jax"):
            item.add_marker(pytest.mark.skip(reason="training runs on tensorflow and jax"))


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield


_COMPILE = keras.Model.compile


@pytest.fixture(autouse=True)
def _eager_steps(request, monkeypatch):
    if request.node.get_closest_marker("compiled"):
        yield
        return

    def compile(self, *args, **kwargs):
        kwargs.setdefault("run_eagerly", True)
        return _COMPILE(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "compile", compile)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _resolve_flags(binary, argv):
    binary.FLAGS.unparse_flags()
    binary.FLAGS([binary.__name__, *argv])
    try:
        return binary.resolve_config()
    finally:
        binary.FLAGS.unparse_flags()


@pytest.fixture
def resolve_flags():
    """`resolve(binary, argv)`: the config `binary` (a module of experiments/)
    resolves from its flags `argv` (plain Python: no Keras, no training)."""
    return _resolve_flags


@pytest.fixture
def resolve_supervised():
    """`resolve(argv)`: `resolve_flags` of `experiments.train_supervised`."""
    from experiments import train_supervised

    return lambda argv: _resolve_flags(train_supervised, argv)
