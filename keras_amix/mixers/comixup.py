"""Co-Mixup: block masks chosen jointly over the batch (saliency + diversity)."""

from keras import ops

from keras_amix.mixers.base import register
from keras_amix.mixers.names import DEFAULT_ALPHA
from keras_amix.mixers.puzzlemix import _BlockMixer
from keras_amix.mixers.puzzlemix import best_swap
from keras_amix.mixers.puzzlemix import block_to_pixel_mask
from keras_amix.mixers.puzzlemix import grid_adjacency
from keras_amix.mixers.puzzlemix import mask_energy
from keras_amix.mixers.puzzlemix import solve_block_masks


def comixup_energy(z, cost, perm, adjacency, smoothness, overlap):
    """Joint energy of the masks of the whole batch, (B,) per output.

    Σ over outputs j of the PuzzleMix energy (cost_j·z_j + Potts) plus
    overlap · Σ_p z_i(p)·(1 − z_{perm⁻¹(i)}(p)): block p of input i used both
    by output i (z_i = 1) and by output perm⁻¹(i) (whose second source is i).
    Summing the returned vector gives the total.
    """
    inverse = ops.argsort(perm)
    z_prev = ops.take(z, inverse, axis=0)
    fixed = ops.cast(ops.equal(perm, ops.arange(ops.shape(perm)[0], dtype=perm.dtype)), "float32")
    reuse = overlap * (1.0 - fixed[:, None]) * z * (1.0 - z_prev)
    return mask_energy(z, cost, adjacency, smoothness) + ops.sum(reuse, axis=1)


def solve_joint_masks(cost, k, perm, adjacency, smoothness, overlap, num_rounds, init_iters):
    """Approximately minimises `comixup_energy` over all outputs' masks.

    1. Each output alone: `solve_block_masks` (overlap ignored).
    2. `num_rounds` rounds: every output j computes its best swap under the
       overlap term linearised at its neighbours' current masks (exact, since
       the energy is bilinear in z_j and its neighbours'); the swap is applied
       only by outputs whose gain beats both coupled outputs perm(j) and
       perm⁻¹(j) (ties by index), so applied swaps never interact and the
       joint energy decreases monotonically.
    """
    batch = ops.shape(perm)[0]
    z = solve_block_masks(cost, k, adjacency, smoothness, init_iters)
    index = ops.arange(batch, dtype="int32")
    perm = ops.cast(perm, "int32")
    inverse = ops.cast(ops.argsort(perm), "int32")
    coupled = ops.cast(ops.not_equal(perm, index), "float32")[:, None]

    def body(_, z):
        z_prev = ops.take(z, inverse, axis=0)
        z_next = ops.take(z, perm, axis=0)
        local = cost + overlap * coupled * ((1.0 - z_prev) - z_next)
        delta, z_new = best_swap(z, local, adjacency, smoothness)
        # Lexicographic (delta, index) comparison with both neighbours.
        key = delta * 1e3 + ops.cast(index, "float32") * 1e-7

        def beats(other):
            other_key = ops.take(key, other, axis=0)
            return ops.logical_or(key < other_key, ops.equal(other, index))

        accept = ops.logical_and(
            ops.logical_and(beats(perm), beats(inverse)), delta < 0.0
        )
        return ops.where(accept[:, None], z_new, z)

    return ops.fori_loop(0, num_rounds, body, z) if num_rounds > 0 else z


@register("comixup")
class CoMixup(_BlockMixer):
    """Co-Mixup: block masks of all outputs chosen jointly (saliency + diversity).

    Output j mixes input j (block mask z_j = 1) with input perm(j) (z_j = 0)
    on a grid_size × grid_size block grid. With block saliencies s normalised
    to mean 1 per image, the masks of the whole batch minimise

        Σ_j [ −Σ_p (z_j(p) s_j(p) + (1 − z_j(p)) s_perm(j)(p))
              + smoothness · #{p ~ q : z_j(p) ≠ z_j(q)} ]
        + overlap · Σ_i Σ_p z_i(p) (1 − z_perm⁻¹(i)(p))

    subject to Σ_p z_j(p) = round(λ_j·N): the last term penalises using the
    same block of an input in the two outputs that draw from it, so salient
    regions are spread over the outputs (diversity). Solver:
    `solve_joint_masks` (per-output swap search, then coupled rounds of
    non-interacting swaps; monotone in the joint energy). λ returned = the
    pixel mask mean.

    Differences from the original (Kim et al. 2021): each output mixes two
    inputs (i, perm(i)) rather than an arbitrary subset of the batch; the
    mixing ratio is a sampled λ (exact block count) rather than free; the
    compatibility term and the submodular/modular alternating solver are
    replaced by the overlap penalty and the swap search above; Potts
    smoothness instead of the content-based one.

    Args:
        alpha: float > 0, Beta(α, α) concentration, or None for
            `default_alpha` (2.0).
        grid_size: blocks per side. Defaults to 4.
        smoothness: float ≥ 0, Potts weight (units of mean block saliency).
            Defaults to 0.5.
        overlap: float ≥ 0, weight of the block re-use (diversity) penalty.
            Defaults to 0.5.
        num_iters: per-output swap iterations and coupled rounds (default
            grid_size²).
        num_classes, per_sample, no_repeat, fixed_lam, seed: as `MixUp`.

    Call arguments:
        images: (B, H, W, C) images or a dict `{"images", "labels"}`.
        labels: (B, K) one-hot / soft labels, or int labels with `num_classes`.
        training: bool; False returns the inputs unchanged.
        saliency: (B, H, W) or (B, H, W, 1): |∂loss/∂x| summed over channels.

    Example:
    ```python
    mixer = keras_amix.mixers.get("comixup", grid_size=4)
    images, labels = mixer(images, labels, saliency=saliency)
    ```

    Reference:
        Kim et al., "Co-Mixup: Saliency Guided Joint Mixup with Supermodular
        Diversity", ICLR 2021.
    """

    default_alpha = DEFAULT_ALPHA["comixup"]

    def __init__(self, overlap=0.5, **kwargs):
        super().__init__(**kwargs)
        if not overlap >= 0:
            raise ValueError(f"`overlap` must be >= 0; received overlap={overlap!r}.")
        self.overlap = float(overlap)

    def sample_params(self, images, labels=None, saliency=None, **extra):
        height, width = ops.shape(images)[1:3]
        lam, perm, sal_a, sal_b, k = self._targets(images, saliency, None)
        adjacency = ops.convert_to_tensor(grid_adjacency(self.grid_size))
        iters = self._iters()
        z = solve_joint_masks(
            -(sal_a - sal_b), k, perm, adjacency, self.smoothness, self.overlap,
            iters, iters,
        )
        mask = block_to_pixel_mask(z, self.grid_size, height, width)
        return {
            "lam": ops.mean(mask, axis=(1, 2, 3)),
            "perm": perm,
            "mask": mask,
            "block_mask": z,
        }

    def get_config(self):
        config = super().get_config()
        config["overlap"] = self.overlap
        return config
