"""Export a trained model as a TensorFlow SavedModel for serving.

`export_saved_model` wraps the model's forward pass with its input
preprocessing (cast, scaling, resizing, normalisation) and output
post-processing (softmax or L2-normalised embeddings), so the artifact maps raw
images to probabilities and needs neither Keras nor this package to run.
"""

import os
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_amix.training.callbacks import check_finite_weights

_OUTPUTS = ("probabilities", "logits", "embeddings")


def _as_channel_vector(values, arg):
    if values is None:
        return None
    try:
        values = [float(v) for v in values]
    except TypeError:
        values = [float(values)]
    if not values:
        raise ValueError(f"`{arg}` must not be empty. Received: {arg}={values!r}")
    return values


def _usual_modes(folder):
    """Gives `folder` (0700 from `mkdtemp`) and everything in it the modes of
    a plain `mkdir` / `open`: 0777 and 0666 masked by the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _input_channels(model):
    try:
        shape = model.inputs[0].shape
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return shape[-1] if len(shape) == 4 else None


def export_saved_model(
    model,
    path,
    *,
    image_size=None,
    mean=None,
    std=None,
    input_scale=255.0,
    output="probabilities",
    overwrite=False,
    verbose=False,
):
    """Writes a SavedModel serving `images -> probabilities` (or logits/embeddings).

    The SavedModel has these signatures, each taking one NHWC tensor `images`
    of any batch size and any height/width, and returning `{"output": ...}`:

    - `serve` and `serving_default`: float32 images;
    - `serve_uint8`: uint8 images.

    The reloaded object's `serve` function (`tf.saved_model.load(path).serve`)
    accepts both uint8 and float32 images.

    Input convention: uint8 images are in [0, 255] and are divided by
    `input_scale`; float32 images are taken as already scaled (in [0, 1] with
    the default `input_scale=255`), i.e. in the same units as `mean` and
    `std`, and are not divided. Inside the signature the images are then
    resized to `image_size` (bilinear) if given, normalised as
    `(x - mean) / std` per channel, and passed through
    `model(x, training=False)`, which must return logits `(B, K)` (or
    features for `output="embeddings"`).

    The export is atomic: it is written to a temporary folder beside `path`
    and renamed into place when complete. On failure the temporary folder is
    removed and an existing export at `path` is left untouched; with
    `overwrite=True` the old export is replaced only after the new one is
    complete. `path` must be a local directory path. The folder gets the
    modes of a plain `mkdir` (0755 under umask 022), its files 0644.

    A model with a NaN or infinite weight (a diverged run) is refused with
    a ValueError naming the first such variable.

    Args:
        model: a built Keras model mapping normalised float images to logits
            (or features).
        path: the directory to write the SavedModel to.
        image_size: optional `(height, width)` (or an int for a square);
            inputs are resized to it (bilinear).
        mean: optional per-channel mean (a float or one value per channel),
            in the units of the scaled input ([0, 1] by default). Default 0.
        std: optional per-channel standard deviation, same units. Default 1.
        input_scale: positive float dividing uint8 inputs (255 maps them to
            [0, 1]).
        output: `"probabilities"` (softmax of the model's logits),
            `"logits"` (the model output as is) or `"embeddings"` (the model
            output, global-average-pooled if it is a rank-4 feature map, then
            L2-normalised along the last axis).
        overwrite: replace an existing export at `path`. When False and
            `path` exists, a ValueError is raised before any work is done.
        verbose: print the endpoints Keras' `ExportArchive` writes.

    Returns:
        The path written, as a string.

    Example:

    ```python
    export_saved_model(model, "/tmp/amix_r18", mean=CIFAR_MEAN, std=CIFAR_STD)
    served = tf.saved_model.load("/tmp/amix_r18")
    probs = served.serve(uint8_images)          # (B, K), rows sum to 1
    ```

    Works under the TensorFlow and JAX backends (JAX goes through jax2tf);
    under other backends it raises a ValueError.
    """
    # --- validation: all of it before touching the file system -------------
    if output not in _OUTPUTS:
        raise ValueError(f"Invalid `output`: {output!r}. Allowed values: {list(_OUTPUTS)}.")
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        raise ValueError(
            "`export_saved_model` needs the tensorflow or jax Keras backend "
            f"(Keras' ExportArchive cannot trace models here). Current backend: {backend!r}. "
            "Save with `model.save('model.keras')`, reload it under "
            "KERAS_BACKEND=tensorflow and export from there."
        )
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"`model` must be a Keras model. Received: {model!r}")
    if not model.built:
        raise ValueError(
            f"`model` {model.name!r} is not built: call it on a batch (or build it) "
            "before exporting."
        )
    check_finite_weights(model, f"the SavedModel {os.fspath(path)!r}")
    mean = _as_channel_vector(mean, "mean")
    std = _as_channel_vector(std, "std")
    if mean is not None and std is not None and len(mean) != len(std):
        raise ValueError(
            "`mean` and `std` must have the same length (one value per channel). "
            f"Received: mean={mean}, std={std}"
        )
    if std is not None and any(s <= 0 for s in std):
        raise ValueError(f"`std` values must be positive. Received: std={std}")
    model_channels = _input_channels(model)
    stats_len = len(mean) if mean is not None else (len(std) if std is not None else None)
    if stats_len is not None and stats_len > 1 and model_channels is not None:
        if stats_len != model_channels:
            raise ValueError(
                f"`mean`/`std` have {stats_len} values but the model takes "
                f"{model_channels} input channels; give one value per channel."
            )
    channels = model_channels or (stats_len if stats_len and stats_len > 1 else None)
    if image_size is not None:
        given = image_size
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            image_size = (image_size, image_size)
        try:
            image_size = tuple(int(s) for s in image_size)
        except (TypeError, ValueError):
            image_size = ()
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(
                "`image_size` must be (height, width) with positive ints. "
                f"Received: image_size={given!r}"
            )
    if isinstance(input_scale, bool) or not isinstance(input_scale, (int, float)) or input_scale <= 0:
        raise ValueError(
            f"`input_scale` must be a positive number. Received: input_scale={input_scale!r}"
        )
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(
            f"Export path {path!r} already exists. Pass `overwrite=True` to "
            "replace it, or choose another path."
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"The parent folder of `path` does not exist: {parent!r}")

    # --- the serving function -----------------------------------------------
    ops = keras.ops

    def make_fn(scale):
        def fn(images):
            x = ops.cast(images, "float32")
            if scale:
                x = x / float(input_scale)
            if image_size is not None:
                x = ops.image.resize(x, image_size, interpolation="bilinear")
            if mean is not None:
                x = x - ops.convert_to_tensor(mean, "float32")
            if std is not None:
                x = x / ops.convert_to_tensor(std, "float32")
            y = model(x, training=False)
            if not hasattr(y, "shape"):
                raise ValueError(
                    "The model must return a single tensor to be exported. "
                    f"Received output of type {type(y)}."
                )
            y = ops.cast(y, "float32")
            if output == "probabilities":
                y = ops.softmax(y, axis=-1)
            elif output == "embeddings":
                if len(y.shape) == 4:
                    y = ops.mean(y, axis=(1, 2))
                y = y / ops.sqrt(ops.maximum(ops.sum(y * y, axis=-1, keepdims=True), 1e-12))
            return {"output": y}

        return fn

    spec_shape = (None, None, None, channels)
    endpoint_kwargs = {}
    if backend == "jax":
        # Serving needs no gradients; jax2tf's custom gradient cannot be
        # traced for the uint8 input when the SavedModel is written.
        endpoint_kwargs["jax2tf_kwargs"] = {"with_gradient": False}
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve_float = archive.add_endpoint(
        "serve_float32",
        make_fn(scale=False),
        input_signature=[keras.InputSpec(shape=spec_shape, dtype="float32")],
        **endpoint_kwargs,
    )
    serve_uint8 = archive.add_endpoint(
        "serve_uint8",
        make_fn(scale=True),
        input_signature=[keras.InputSpec(shape=spec_shape, dtype="uint8")],
        **endpoint_kwargs,
    )

    @tf.function(autograph=False)
    def serve(images):
        # Dispatch on the dtype at trace time: one concrete function per dtype.
        if images.dtype == tf.uint8:
            return serve_uint8(images)
        return serve_float(tf.cast(images, tf.float32))

    tf_shape = list(spec_shape)
    # Traced float32 first: this trace becomes the `serve` signature.
    serve.get_concrete_function(tf.TensorSpec(tf_shape, tf.float32, name="images"))
    serve.get_concrete_function(tf.TensorSpec(tf_shape, tf.uint8, name="images"))
    archive.add_endpoint("serve", serve)
    # `serving_default` (what TF-Serving calls) is the float32 signature too.
    archive.add_endpoint("serving_default", serve_float)

    # --- atomic write --------------------------------------------------------
    base = os.path.basename(path) or "export"
    tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    backup = None
    try:
        archive.write_out(tmp, verbose=verbose)
        _usual_modes(tmp)
        if os.path.exists(path):
            backup = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rmdir(backup)
            os.rename(path, backup)
        try:
            os.rename(tmp, path)
        except BaseException:
            if backup is not None:
                os.rename(backup, path)
                backup = None
            raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return path
