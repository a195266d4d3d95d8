"""The mixing primitives, once: λ, the pairing, and the two convex combinations.

Every mixer, model (AMix, MoCo), callback and visualiser mixes through these
(`keras.ops` / `keras.random` only, so they run on every backend, eagerly,
compiled and inside `tf.data.Dataset.map`):

- `sample_lambda`: λ ~ Beta(α, α) from two Gamma draws.
- `sample_permutation`: the pairing `perm` (optionally without fixed points).
- `mix_images`: weight·a + (1 − weight)·b, the weight of the first image a.
- `mix_labels`: λ·y + (1 − λ)·y[perm].
"""

import keras
from keras import ops


def sample_lambda(seed_gen, alpha, shape):
    """λ ~ Beta(α, α) of the given shape, float32.

    Drawn as g1 / (g1 + g2) with g1, g2 ~ Gamma(α) (two `keras.random.gamma`
    draws) because `keras.random.beta` does not compile under XLA on the
    TensorFlow backend. If both Gamma draws underflow to 0 (possible for tiny
    α in float32) λ = 0.5.
    """
    g1 = keras.random.gamma(shape, alpha, dtype="float32", seed=seed_gen)
    g2 = keras.random.gamma(shape, alpha, dtype="float32", seed=seed_gen)
    total = g1 + g2
    return ops.where(total > 0, g1 / ops.maximum(total, 1e-30), 0.5)


def sample_permutation(seed_gen, batch_size, no_repeat=False):
    """A random permutation of `range(batch_size)`, int32 of shape (B,).

    With `no_repeat=True` the permutation has no fixed point (perm[i] != i):
    a random order σ composed with a random cyclic shift k ∈ [1, B - 1],
    perm[σ[j]] = σ[(j + k) mod B].
    """
    keys = keras.random.uniform((batch_size,), seed=seed_gen)
    order = ops.cast(ops.argsort(keys), "int32")
    if not no_repeat:
        return order
    size = ops.cast(batch_size, "int32")
    u = keras.random.uniform((), seed=seed_gen)
    shift = 1 + ops.cast(ops.floor(u * ops.cast(size - 1, "float32")), "int32")
    shift = ops.minimum(shift, size - 1)
    inverse = ops.cast(ops.argsort(order), "int32")
    return ops.take(order, ops.mod(inverse + shift, size), axis=0)


def is_integer_dtype(dtype):
    dtype = keras.backend.standardize_dtype(dtype)
    return "int" in dtype or dtype == "bool"


def cast_like(x, dtype):
    """Casts float `x` to `dtype`, rounding (and clipping uint8 to [0, 255]) for integers."""
    dtype = keras.backend.standardize_dtype(dtype)
    if is_integer_dtype(dtype):
        x = ops.round(x)
        if dtype == "uint8":
            x = ops.clip(x, 0, 255)
    return ops.cast(x, dtype)


def _compute_dtype(dtype):
    # float64 stays float64; everything else (ints, float16, bfloat16) mixes in float32.
    return "float64" if keras.backend.standardize_dtype(dtype) == "float64" else "float32"


def _broadcast(weight, rank):
    """Scalar → as is; (B,) → (B, 1, ..., 1); a rank-`rank` weight → as is."""
    if len(weight.shape) in (0, rank):
        return weight
    return ops.reshape(weight, (-1,) + (1,) * (rank - 1))


def mix_images(a, b, weight):
    """weight · a + (1 − weight) · b, in the dtype of `a`.

    Args:
        a: (B, ...) images (or features); `weight` is the weight of `a`.
        b: the paired batch, e.g. `ops.take(a, perm, axis=0)`, of a's shape.
        weight: a scalar λ, (B,) per-sample λ, or a mask of a's rank that
            broadcasts to it (e.g. (B, H, W, 1)).

    Computed in float32 (float64 for float64 `a`); integer results are
    rounded (uint8 also clipped to [0, 255]) before the cast back.
    """
    a = ops.convert_to_tensor(a)
    dtype = keras.backend.standardize_dtype(a.dtype)
    compute = _compute_dtype(dtype)
    weight = _broadcast(ops.cast(weight, compute), len(a.shape))
    mixed = weight * ops.cast(a, compute) + (1.0 - weight) * ops.cast(b, compute)
    return cast_like(mixed, dtype)


def mix_labels(y, perm, lam):
    """λ · y + (1 − λ) · y[perm] for (B, K) float labels, in y's dtype.

    `lam` is a scalar or (B,) (one λ per row); computed in float32.
    """
    y = ops.convert_to_tensor(y)
    dtype = y.dtype
    y32 = ops.cast(y, "float32")
    lam = ops.cast(lam, "float32")
    if len(lam.shape):
        lam = ops.reshape(lam, (-1, 1))
    mixed = lam * y32 + (1.0 - lam) * ops.take(y32, perm, axis=0)
    return ops.cast(mixed, dtype)
