"""Hand-computed cases and method-specific properties."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from keras_amix import mixers
from keras_amix.mixers.comixup import comixup_energy
from keras_amix.mixers.comixup import solve_joint_masks
from keras_amix.mixers.fmix import low_frequency_noise
from keras_amix.mixers.fmix import top_fraction_mask
from keras_amix.mixers.puzzlemix import grid_adjacency
from keras_amix.mixers.puzzlemix import mask_energy
from keras_amix.mixers.puzzlemix import solve_block_masks
from keras_amix.mixers.saliencymix import spectral_residual_saliency


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _grid_images():
    """Two 4×4 one-channel images: 0..15 and 100..115."""
    a = np.arange(16, dtype="float32").reshape(4, 4, 1)
    return np.stack([a, a + 100.0])


def test_sample_lambda_moments():
    seed = keras.random.SeedGenerator(0)
    lam = _np(mixers.sample_lambda(seed, 1.0, (4000,)))
    assert lam.min() >= 0 and lam.max() <= 1
    # Beta(1, 1) is uniform: mean 1/2, variance 1/12.
    assert abs(lam.mean() - 0.5) < 0.02 and abs(lam.var() - 1 / 12) < 0.01
    lam = _np(mixers.sample_lambda(seed, 0.2, (4000,)))
    # Beta(0.2, 0.2): variance 1 / (4 (2α + 1)) = 0.1786.
    assert abs(lam.var() - 1 / (4 * 1.4)) < 0.015


def test_sample_permutation_no_repeat():
    seed = keras.random.SeedGenerator(0)
    for batch in (2, 3, 5):
        for _ in range(10):
            perm = _np(mixers.sample_permutation(seed, batch, no_repeat=True))
            assert sorted(perm.tolist()) == list(range(batch))
            assert np.all(perm != np.arange(batch))
    perms = {tuple(_np(mixers.sample_permutation(seed, 3))) for _ in range(60)}
    assert len(perms) == 6  # all permutations of 3, fixed points allowed


def test_mixup_exact():
    images = _grid_images()
    labels = np.eye(2, dtype="float32")
    mixer = mixers.get("mixup", fixed_lam=0.25, no_repeat=True)
    out, y = mixer(images, labels)
    expected0 = 0.25 * images[0] + 0.75 * images[1]  # pixel (0, 0) = 75
    np.testing.assert_allclose(_np(out)[0], expected0, atol=1e-5)
    assert _np(out)[0, 0, 0, 0] == pytest.approx(75.0)
    np.testing.assert_allclose(_np(y), [[0.25, 0.75], [0.75, 0.25]], atol=1e-6)


def test_cutmix_given_box():
    seed = keras.random.SeedGenerator(0)
    lam = ops.array([0.75, 0.75])
    centers = (ops.array([1, 0], "int32"), ops.array([1, 0], "int32"))
    mask, exact, box = mixers.sample_boxes(seed, lam, 4, 4, centers=centers)
    mask, exact, box = _np(mask)[..., 0], _np(exact), _np(box)
    # Sample 0: 2×2 box at rows 0-1, cols 0-1 (centre (1, 1)).
    expected = np.ones((4, 4))
    expected[0:2, 0:2] = 0
    np.testing.assert_array_equal(mask[0], expected)
    np.testing.assert_array_equal(box[0], [0, 0, 2, 2])
    # Sample 1: centre (0, 0) clips the box to the single pixel (0, 0).
    expected = np.ones((4, 4))
    expected[0, 0] = 0
    np.testing.assert_array_equal(mask[1], expected)
    np.testing.assert_allclose(exact, [0.75, 15 / 16])
    images = _grid_images()
    cutmix = mixers.get("cutmix")
    params = {"lam": ops.array(exact), "perm": ops.array([1, 0], "int32"), "mask": mask[..., None]}
    out = _np(cutmix.mix_images(images, images[::-1], params))[..., 0]
    np.testing.assert_array_equal(out[0], [[100, 101, 2, 3], [104, 105, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]])
    y = _np(cutmix.mix_labels(np.eye(2, dtype="float32"), params))
    np.testing.assert_allclose(y, [[0.75, 0.25], [1 / 16, 15 / 16]])


def test_resizemix_given_tau_and_position():
    images = _grid_images()
    mixer = mixers.get("resizemix")
    # τ = 0.5 → a 2×2 copy of image 1 pasted at rows 1-2, cols 1-2 of image 0.
    box = ops.array([[1, 1, 3, 3], [0, 2, 2, 4]], "int32")
    mask = mixers.box_mask(box[:, 0], box[:, 1], box[:, 2], box[:, 3], 4, 4)
    params = {"lam": ops.array([0.75, 0.75]), "perm": ops.array([1, 0], "int32"), "mask": mask, "box": box}
    out = _np(mixer.mix_images(images, images[::-1], params))[..., 0]
    np.testing.assert_array_equal(
        out[0], [[0, 1, 2, 3], [4, 100, 102, 7], [8, 108, 110, 11], [12, 13, 14, 15]]
    )
    np.testing.assert_array_equal(
        out[1], [[100, 101, 0, 2], [104, 105, 8, 10], [108, 109, 110, 111], [112, 113, 114, 115]]
    )


def test_resizemix_sampled_lambda_is_area():
    images = np.random.default_rng(0).uniform(size=(4, 10, 10, 3)).astype("float32")
    mixer = mixers.get("resizemix", seed=0, per_sample=True)
    for _ in range(5):
        params = mixer.sample_params(images)
        y1, x1, y2, x2 = _np(params["box"]).T
        h, w = y2 - y1, x2 - x1
        assert np.all((h >= 1) & (h <= 8) & (y1 >= 0) & (y2 <= 10) & (x2 <= 10))
        np.testing.assert_allclose(_np(params["lam"]), 1 - h * w / 100.0, atol=1e-6)


def test_fmix_mask_mean_and_low_frequency():
    seed = keras.random.SeedGenerator(0)
    lam = ops.array([0.1, 0.37, 0.5, 0.9, 0.0, 1.0])
    field = low_frequency_noise(seed, 6, 16, 16, decay=3.0)
    mask, exact = top_fraction_mask(field, lam)
    mask, exact = _np(mask)[..., 0], _np(exact)
    np.testing.assert_allclose(exact, np.round(_np(lam) * 256) / 256)
    np.testing.assert_allclose(mask.mean((1, 2)), exact)
    # Spectral energy (DC removed) inside |f| <= 1/8 cycles/pixel.
    f = np.sqrt(np.fft.fftfreq(16)[:, None] ** 2 + np.fft.fftfreq(16)[None] ** 2)
    low = (f <= 0.125) & (f > 0)

    def low_fraction(m):
        power = np.abs(np.fft.fft2(m - m.mean())) ** 2
        return power[low].sum() / power.sum()

    rng = np.random.default_rng(0)
    ours = [low_fraction(m) for m in mask[:4]]
    random = [low_fraction((rng.permutation(256) < m.sum()).reshape(16, 16) * 1.0) for m in mask[:4]]
    # A random mask spreads its energy evenly (12 of 255 bins: ~5%).
    assert min(ours) > 0.2 and max(random) < 0.1 and np.mean(ours) > 0.3


def test_saliency_peak_at_planted_spot():
    gray = np.full((2, 16, 16), 0.5, "float32")
    gray[0, 10:12, 4:6] = 3.0
    gray[1, 2:4, 12:14] = 3.0
    sal = _np(spectral_residual_saliency(gray))
    peaks = [np.unravel_index(s.argmax(), s.shape) for s in sal]
    assert 9 <= peaks[0][0] <= 12 and 3 <= peaks[0][1] <= 6
    assert 1 <= peaks[1][0] <= 4 and 11 <= peaks[1][1] <= 14
    # On a noisy background, non-square, odd 3×3 spots.
    rng = np.random.default_rng(0)
    noisy = rng.uniform(0, 0.3, (3, 24, 20)).astype("float32")
    for b, (y, x) in enumerate([(5, 14), (18, 2), (11, 9)]):
        noisy[b, y : y + 3, x : x + 3] += 2.0
        peak = np.unravel_index(_np(spectral_residual_saliency(noisy))[b].argmax(), (24, 20))
        assert y - 1 <= peak[0] <= y + 3 and x - 1 <= peak[1] <= x + 3
    # The SaliencyMix box of image 0 is centred on image 1's spot.
    images = np.repeat(gray[..., None], 3, axis=-1)
    mixer = mixers.get("saliencymix", fixed_lam=0.75, no_repeat=True)
    params = mixer.sample_params(images)
    y1, x1, y2, x2 = _np(params["box"])[0]
    cy, cx = peaks[1]
    expected = [max(cy - 4, 0), max(cx - 4, 0), min(cy + 4, 16), min(cx + 4, 16)]
    np.testing.assert_array_equal([y1, x1, y2, x2], expected)
    mixed = _np(mixer.mix_images(images, images[::-1], params))
    assert mixed[0, 2:4, 12:14].min() == pytest.approx(3.0)  # the spot was pasted


def test_puzzlemix_keeps_salient_blocks():
    images = np.zeros((2, 8, 8, 1), "float32")
    images[0, 0:4, 0:4] = 1.0  # salient content of image 0 at top-left
    images[1, 4:8, 4:8] = 2.0  # of image 1 at bottom-right
    saliency = images[..., 0].copy() + 0.01
    for transport in (False, True):
        mixer = mixers.get(
            "puzzlemix", grid_size=2, fixed_lam=0.5, no_repeat=True, transport=transport
        )
        params = mixer.sample_params(images, saliency=saliency)
        z = _np(params["block_mask"])
        assert z[0, 0] == 1 and z[0, 3] == 0  # keep 0's block, take 1's block
        mixed = _np(mixer.mix_images(images, images[::-1], params))[0, ..., 0]
        assert (mixed == 1.0).sum() == 16 and (mixed == 2.0).sum() == 16
        if not transport:
            assert np.all(mixed[0:4, 0:4] == 1.0) and np.all(mixed[4:8, 4:8] == 2.0)
    # Transport moves a salient block into the region kept from its image.
    images = np.zeros((2, 8, 8, 1), "float32")
    images[0, 4:8, 4:8] = 1.0
    images[1, 4:8, 4:8] = 2.0
    saliency = images[..., 0].copy() + 0.01
    mixer = mixers.get("puzzlemix", grid_size=2, fixed_lam=0.5, no_repeat=True, transport_cost=0.1)
    params = mixer.sample_params(images, saliency=saliency)
    mixed = _np(mixer.mix_images(images, images[::-1], params))[..., 0]
    assert (mixed[0] == 1.0).sum() == 16 and (mixed[0] == 2.0).sum() == 16


def test_puzzlemix_pairs_an_unpaired_saliency_by_its_own_perm():
    # Cross-view use: the second batch's saliency, before pairing, is permuted by
    # the perm the mixer draws, exactly as an already-paired one would be.
    rng = np.random.default_rng(0)
    images = rng.random((4, 8, 8, 1)).astype("float32")
    sal_a, sal_other = rng.random((4, 8, 8)), rng.random((4, 8, 8))
    def make():
        return mixers.get("puzzlemix", grid_size=4, seed=5, no_repeat=True, transport=False,
                          fixed_lam=0.5)  # 8 of 16 blocks: the mask depends on the saliency

    unpaired = make().sample_params(images, saliency=sal_a, saliency_b_unpaired=sal_other)
    perm = _np(unpaired["perm"])
    assert np.all(perm != np.arange(4))
    paired = make().sample_params(images, saliency=sal_a, saliency_b=sal_other[perm])
    np.testing.assert_array_equal(_np(unpaired["block_mask"]), _np(paired["block_mask"]))
    # ... and the pairing matters: the unpermuted saliency gives other masks.
    ignored = make().sample_params(images, saliency=sal_a, saliency_b=sal_other)
    assert not np.array_equal(_np(unpaired["block_mask"]), _np(ignored["block_mask"]))


def _all_masks(n):
    return np.array(list(itertools.product([0, 1], repeat=n)), "float32")


@pytest.mark.parametrize("grid", [2, 3])
@pytest.mark.parametrize("smoothness", [0.0, 0.5, 2.0])
def test_block_solver_vs_brute_force(grid, smoothness):
    """Stated quality: optimal on every instance for 2×2 grids and for
    smoothness 0; 3×3 with smoothness > 0: ≥ 90% of instances optimal and the
    worst gap ≤ 25% of |E*| (measured: 99% / 98% optimal for 0.5 / 2)."""
    rng = np.random.default_rng(grid * 10 + int(smoothness * 4))
    n, batch = grid * grid, 100
    adjacency = grid_adjacency(grid)
    sal = rng.gamma(0.5, size=(2, batch, n)).astype("float32")
    sal /= sal.mean(-1, keepdims=True)
    cost = -(sal[0] - sal[1])
    k = rng.integers(0, n + 1, batch).astype("int32")
    z = _np(solve_block_masks(ops.array(cost), ops.array(k), ops.array(adjacency), smoothness, n))
    assert np.array_equal(z.sum(1), k)
    energy = _np(mask_energy(ops.array(z), ops.array(cost), ops.array(adjacency), smoothness))
    allz = _all_masks(n)
    pair = allz @ adjacency.sum(0) - ((allz @ adjacency) * allz).sum(1)
    brute = cost @ allz.T + smoothness * pair[None]
    brute = np.where(allz.sum(1)[None] == k[:, None], brute, np.inf).min(1)
    gap = energy - brute
    assert np.all(gap > -1e-4)
    if grid == 2 or smoothness == 0.0:
        np.testing.assert_allclose(energy, brute, atol=1e-4)
    else:
        assert np.mean(gap < 1e-4) >= 0.9
        assert np.all(gap <= 0.25 * np.abs(brute) + 1e-4)


@pytest.mark.parametrize("grid,batch", [(2, 3), (3, 2)])
def test_joint_solver_vs_brute_force(grid, batch):
    """Stated quality (Co-Mixup, overlap 1, smoothness 0.5): the joint energy
    never exceeds the independent (PuzzleMix) solution's; 2×2 with a 3-cycle:
    ≥ 90% optimal; 3×3 with a 2-cycle: ≥ 75% optimal, mean gap ≤ 20% of
    mean |E*| (measured: 97% and 80% optimal, mean gap 13%)."""
    rng = np.random.default_rng(grid)
    n, trials = grid * grid, 40
    adjacency = grid_adjacency(grid)
    perm = np.roll(np.arange(batch), 1).astype("int32")
    inverse = np.argsort(perm)
    # All trials in one batch: trial t owns outputs t·batch ... (t+1)·batch − 1.
    big_perm = (perm[None] + batch * np.arange(trials)[:, None]).ravel().astype("int32")
    sal = rng.gamma(0.5, size=(trials, batch, n)).astype("float32")
    sal /= sal.mean(-1, keepdims=True)
    cost = -(sal - sal[:, perm])
    k = rng.integers(0, n + 1, (trials, batch)).astype("int32")
    flat_cost, flat_k = ops.array(cost.reshape(-1, n)), ops.array(k.ravel())
    args = (ops.array(big_perm), ops.array(adjacency), 0.5, 1.0)
    z = solve_joint_masks(flat_cost, flat_k, *args, n, n)
    z0 = solve_block_masks(flat_cost, flat_k, ops.array(adjacency), 0.5, n)
    energy = _np(comixup_energy(z, flat_cost, *args)).reshape(trials, batch).sum(1)
    independent = _np(comixup_energy(z0, flat_cost, *args)).reshape(trials, batch).sum(1)
    assert np.all(energy <= independent + 1e-4)
    allz = _all_masks(n)
    gaps, scale = [], []
    for t in range(trials):
        cands = [allz[allz.sum(1) == kk] for kk in k[t]]
        index = np.meshgrid(*[np.arange(len(c)) for c in cands], indexing="ij")
        zz = np.stack([cands[j][index[j].ravel()] for j in range(batch)], 1)
        unary = (cost[t][None] * zz).sum((1, 2))
        pair = ((zz @ adjacency.sum(0)) - ((zz @ adjacency) * zz).sum(-1)).sum(1)
        overlap = (zz * (1 - zz[:, inverse])).sum((1, 2))
        best = (unary + 0.5 * pair + overlap).min()
        gaps.append(energy[t] - best)
        scale.append(abs(best))
    gaps = np.array(gaps)
    assert np.all(gaps > -1e-4)
    if grid == 2:
        assert np.mean(gaps < 1e-4) >= 0.9
    else:
        assert np.mean(gaps < 1e-4) >= 0.75
        assert gaps.mean() <= 0.2 * np.mean(scale)


def test_comixup_spreads_salient_blocks():
    """Two identical images with one salient block: MixUp-style pairing would
    use that block in both outputs; the overlap term gives it to one output."""
    images = np.zeros((2, 8, 8, 1), "float32")
    images[:, 0:4, 0:4] = 1.0
    saliency = images[..., 0] + 0.01
    params = mixers.get(
        "comixup", grid_size=2, fixed_lam=0.5, no_repeat=True, overlap=1.0, smoothness=0.0
    ).sample_params(images, saliency=saliency)
    z = _np(params["block_mask"])
    # Output 0 uses block 0 of input 0 iff z[0,0] = 1; output 1 uses it iff z[1,0] = 0.
    assert z[0, 0] + (1 - z[1, 0]) == 1


def test_manifoldmix_layer_selection():
    mixer = mixers.get("manifoldmix", seed=0, fixed_lam=0.5, no_repeat=True)
    assert mixer.mixes_hidden and mixer.layers == ("input", "stage1", "stage2", "stage3")
    features = np.arange(2 * 3 * 3 * 4, dtype="float32").reshape(2, 3, 3, 4)
    seen = set()
    for _ in range(30):
        params = mixer.sample_params(features)
        layer = int(_np(params["layer"]))
        seen.add(layer)
        for i, name in enumerate(mixer.layers):
            out = _np(mixer.maybe_mix(features, name, params))
            expected = 0.5 * features + 0.5 * features[::-1] if i == layer else features
            np.testing.assert_allclose(out, expected)
    assert seen == {0, 1, 2, 3}
    # Any rank: (B, C) features.
    out, y = mixer(np.eye(2, dtype="float32"), np.eye(2, dtype="float32"))
    np.testing.assert_allclose(_np(out), 0.5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="keras-cv runs TF code")
def test_fmix_matches_keras_cv_fourier_mix_properties():
    """Reference check against keras-cv's FourierMix (optional `kerascv` extra).

    Both: the mask mean equals the label weight λ, and the masks are
    low-frequency (far more spectral energy below 1/8 cycles/pixel than a
    random binary mask of the same mean).
    """
    keras_cv = pytest.importorskip("keras_cv")
    size, batch = 32, 8
    # Sample i is constant i: a mixed pixel value reveals which source it came
    # from, so the mask of the first image is mixed == i.
    images = np.broadcast_to(np.arange(batch, dtype="float32")[:, None, None, None],
                             (batch, size, size, 1)).copy()
    labels = np.eye(batch, dtype="float32")
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None] ** 2)
    low = (f <= 0.125) & (f > 0)

    def low_fraction(m):
        power = np.abs(np.fft.fft2(m - m.mean())) ** 2
        return power[low].sum() / max(power.sum(), 1e-12)

    theirs = keras_cv.layers.FourierMix(alpha=1.0, decay_power=3, seed=0)
    ours = mixers.get("fmix", alpha=1.0, decay=3.0, seed=0)
    out_theirs = theirs({"images": images, "labels": labels})
    out_ours = ours(images, labels)
    fractions = {}
    for name, (mixed, mixed_labels) in {
        "keras_cv": (out_theirs["images"], out_theirs["labels"]),
        "ours": out_ours,
    }.items():
        mixed, mixed_labels = _np(mixed)[..., 0], _np(mixed_labels)
        fractions[name] = []
        for i in range(batch):
            mask = (mixed[i] == i).astype("float32")
            if mixed_labels[i, i] in (0.0, 1.0) or mask.mean() in (0.0, 1.0):
                continue  # paired with itself or an all-one/all-zero mask
            np.testing.assert_allclose(mask.mean(), mixed_labels[i, i], atol=1.5 / size**2)
            fractions[name].append(low_fraction(mask))
        assert fractions[name], name
    rng = np.random.default_rng(0)
    random = low_fraction((rng.permutation(size * size) < size * size // 2)
                          .reshape(size, size).astype("float32"))
    assert random < 0.1
    for name, values in fractions.items():
        assert np.mean(values) > 0.3, (name, values)
