"""Linear evaluation: the encoder checks, the schedule and the protocol."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from experiments import linear_eval as le
from keras_amix import backbones
from keras_amix.models.moco import MoCoV2


def _trained_like_encoder(path):
    """A MoCo encoder file whose BatchNorm statistics were updated (as by training)."""
    model = MoCoV2(backbones.resnet(18, width=8, input_shape=(8, 8, 3)), projection_dim=4,
                   hidden_dim=8, queue_size=8)
    encoder = model.encoder()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    for layer in le._all_layers(encoder):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 0.1)
    encoder.save(path)
    return encoder, x


def test_loads_an_encoder_file_and_freezes_it(tmp_path):
    path = str(tmp_path / "encoder.keras")
    encoder, x = _trained_like_encoder(path)
    loaded = le.load_encoder(path)
    assert loaded.image_size == 8 and not loaded.normalizes_inputs
    assert not loaded.model.trainable and not loaded.model.trainable_weights
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.model(x)),
                               keras.ops.convert_to_numpy(encoder(x)), atol=1e-5)


def test_refuses_what_is_not_a_trained_encoder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        le.load_encoder(str(tmp_path / "missing.keras"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        le.load_encoder(str(text))
    fake = tmp_path / "fake.keras"
    fake.write_text("not a zip archive")
    with pytest.raises(ValueError, match="not a loadable Keras model"):
        le.load_encoder(str(fake))
    # A classifier (ends in a Dense head) is not an encoder.
    inputs = keras.Input((8, 8, 3))
    head = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, head).save(str(tmp_path / "classifier.keras"))
    with pytest.raises(ValueError, match="classifier head"):
        le.load_encoder(str(tmp_path / "classifier.keras"))
    # A freshly built encoder has never been trained.
    model = MoCoV2(backbones.resnet(18, width=8, input_shape=(8, 8, 3)), projection_dim=4,
                   hidden_dim=8, queue_size=8)
    model.encoder().save(str(tmp_path / "untrained.keras"))
    with pytest.raises(ValueError, match="never trained"):
        le.load_encoder(str(tmp_path / "untrained.keras"))
    # A folder that is not a SavedModel.
    with pytest.raises(ValueError, match="saved_model.pb"):
        le.load_encoder(str(tmp_path))


def test_learning_rate_drops_tenfold_at_30_and_60_percent():
    cfg = le.Config(encoder="x", epochs=100, lr=0.1)
    schedule = le._learning_rate(cfg, steps_per_epoch=10)
    values = {step: float(schedule(step)) for step in (0, 299, 300, 599, 600, 999)}
    assert values == pytest.approx({0: 0.1, 299: 0.1, 300: 0.01, 599: 0.01,
                                    600: 0.001, 999: 0.001})


@pytest.mark.parametrize("changes,match", [
    (dict(encoder=None), "--encoder"),
    (dict(augment="autoaugment"), "--augment"),
    (dict(epochs=0), "--epochs"),
    (dict(decay_at=(0.6, 0.3)), "--decay_at"),
    (dict(decay_at=(0.3, 1.5)), "--decay_at"),
    (dict(weight_decay=-1.0), "--weight_decay"),
])
def test_validate_rejects_bad_configs(changes, match):
    cfg = dataclasses.replace(le.Config(encoder="enc.keras"), **changes)
    with pytest.raises(ValueError, match=match):
        le.validate(cfg)


@pytest.mark.backend_independent
@pytest.mark.parametrize("augment", ["none", "cifar"])
def test_protocol_learns_a_linearly_separable_problem(tmp_path, augment):
    # Flattened raw digits are close to linearly separable (~95 %): a linear
    # probe on an identity-like encoder must get far above chance (10 %).
    inputs = keras.Input((8, 8, 3))
    encoder = keras.Model(inputs, keras.layers.Flatten()(inputs), name="pixels")
    path = str(tmp_path / "pixels.keras")
    encoder.save(path)
    cfg = le.Config(encoder=path, augment=augment, epochs=15, batch_size=64, lr=0.1,
                    per_class_limit=60, test_per_class_limit=20)
    metrics = le.evaluate(cfg, str(tmp_path / "run"))
    assert metrics["feature_dim"] == 192 and metrics["train_examples"] == 600
    assert metrics["top1"] > 0.7, metrics["top1"]
    saved = json.load(open(tmp_path / "run" / "metrics.json"))
    assert saved["top1"] == metrics["top1"]
    assert os.path.exists(tmp_path / "run" / "classifier.keras")


@pytest.mark.backend_independent
def test_a_folder_without_a_test_split_evaluates_on_val(tmp_path, resolve_flags):
    """As the training binaries: train/ and val/ (ImageNet's layout) evaluate on
    val/; a split the data set lacks is a ValueError naming the flag."""
    for split in ("train", "val"):
        for name in ("a", "b"):
            os.makedirs(tmp_path / "f" / split / name)
            keras.utils.save_img(str(tmp_path / "f" / split / name / "0.png"),
                                 np.zeros((8, 8, 3)))
    argv = [f"--dataset={tmp_path / 'f'}", "--encoder=e.keras"]
    assert resolve_flags(le, argv).test_split == "val"
    with pytest.raises(ValueError, match="`--train_split` .*received 'unlabelled'"):
        resolve_flags(le, argv + ["--train_split=unlabelled"])


@pytest.mark.backend_independent
def test_numpy_input_equals_tf_data_and_learns(tmp_path):
    """`--input=numpy` (in-memory .npz, no TensorFlow needed) against the tf.data
    path on the same file: with `--augment=none` the features and therefore the
    whole linear training are the same; with `--augment=cifar` it still learns."""
    from keras_amix.data.sources import _digits_split

    npz = str(tmp_path / "digits.npz")
    (x_train, y_train), (x_test, y_test) = _digits_split("train"), _digits_split("test")
    np.savez(npz, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    inputs = keras.Input((8, 8, 3))
    encoder = keras.Model(inputs, keras.layers.Flatten()(inputs), name="pixels")
    path = str(tmp_path / "pixels.keras")
    encoder.save(path)
    cfg = le.Config(encoder=path, dataset=npz, augment="none", epochs=6, batch_size=64,
                    lr=0.1, per_class_limit=40, test_per_class_limit=20)
    runs = {kind: le.evaluate(dataclasses.replace(cfg, input=kind), str(tmp_path / kind))
            for kind in ("tfdata", "numpy")}
    assert runs["numpy"]["train_examples"] == runs["tfdata"]["train_examples"] == 400
    np.testing.assert_allclose(runs["numpy"]["history"]["loss"],
                               runs["tfdata"]["history"]["loss"], rtol=1e-4)
    assert runs["numpy"]["top1"] == runs["tfdata"]["top1"] > 0.7
    augmented = le.evaluate(dataclasses.replace(cfg, input="numpy", augment="cifar", epochs=10),
                            str(tmp_path / "augmented"))
    assert augmented["top1"] > 0.3, augmented["top1"]  # chance: 0.1
    with pytest.raises(ValueError, match="--augment=none|cifar"):
        le.evaluate(dataclasses.replace(cfg, input="numpy", augment="imagenet"),
                    str(tmp_path / "refused"))


def test_refuses_a_classifier_whatever_its_last_layer(tmp_path):
    # linear_eval's own classifier.keras: the Dense head sits inside a nested model.
    path = str(tmp_path / "encoder.keras")
    encoder, x = _trained_like_encoder(path)
    inputs = keras.Input((8, 8, 3))
    classifier = keras.Model(inputs, le._head(encoder.output_shape[-1], 10)(encoder(inputs)))
    classifier.save(str(tmp_path / "classifier.keras"))
    with pytest.raises(ValueError, match="classifier.keras.*classifier head"):
        le.load_encoder(str(tmp_path / "classifier.keras"))
    # Outputs that are probabilities (rows >= 0 summing to 1), whatever computes them.
    probabilities = keras.Model(inputs, keras.layers.Activation("softmax")(
        keras.layers.Dense(10)(keras.layers.Flatten()(inputs))))
    with pytest.raises(ValueError, match="'probs'.*probabilities"):
        le._refuse_probabilities(probabilities, "probs")
    le._refuse_probabilities(encoder, "features")  # pooled ReLU features pass


@pytest.mark.backend_independent
def test_a_saved_model_needs_trust_and_must_not_be_a_classifier(tmp_path):
    from keras_amix import export

    inputs = keras.Input((8, 8, 3))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    path = export.export_saved_model(keras.Model(inputs, logits), str(tmp_path / "export"),
                                     image_size=(8, 8))  # serves probabilities
    with pytest.raises(ValueError, match="--trust_saved_model"):
        le.load_encoder(path)
    with pytest.raises(ValueError, match="export.*probabilities"):
        le.load_encoder(path, trust_saved_model=True)
    with pytest.raises(ValueError, match="--trust_saved_model"):
        le.validate(le.Config(encoder=path))
    le.validate(le.Config(encoder=path, trust_saved_model=True))
