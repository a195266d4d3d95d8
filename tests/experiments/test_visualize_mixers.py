"""The mixer visualizer end to end on the embedded digits set (in-process)."""

import json
import os

import numpy as np
import pytest

from experiments import visualize_mixers as vm


@pytest.mark.backend_independent
def test_digits_figure_has_expected_size_and_content(tmp_path):
    workdir = str(tmp_path / "viz")
    path = vm.run(dataset="digits", split="train", pairs=2, dpi=40, workdir=workdir)
    assert path == os.path.join(workdir, "mixers.png")
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        # 2 pairs, 7 mixers: width 1.5 + 4 * 1.1 + 0.15 + 0.1 = 6.15 in, height
        # 0.75 + 8 * 1.1 + 0.45 = 10.0 in; at 40 dpi 246 x 400 pixels.
        assert image.size == (246, 400)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 10.0  # not a blank canvas
    # The digits row area (not just the text) carries image content: rows differ.
    top_row = pixels[40:80, 60:]
    last_row = pixels[-80:-40, 60:]
    assert np.abs(top_row - last_row).mean() > 1.0

    record = json.load(open(os.path.join(workdir, "mixers.json")))
    assert record["config"]["image_size"] == 32
    assert list(record["lam"]) == list(vm.DEFAULT_METHODS)
    for lams in record["lam"].values():
        assert len(lams) == 2 and all(0.0 <= v <= 1.0 for v in lams)


@pytest.mark.backend_independent
@pytest.mark.parametrize("method", ["cutmix", "puzzlemix", "comixup"])
def test_fixed_pairing_and_mask_match_the_pixels(method):
    rng = np.random.default_rng(0)
    images = rng.random((6, 16, 16, 3), dtype=np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2])
    mixed, mask, lam = vm.mix_fixed_pairs(method, images, labels, 3, alpha=1.0, seed=1)
    assert mixed.shape == (3, 16, 16, 3) and mask.shape == (3, 16, 16) and lam.shape == (3,)
    np.testing.assert_allclose(mask.mean(axis=(1, 2)), lam, atol=1e-6)
    if method != "puzzlemix":  # PuzzleMix transports blocks before blending.
        # Output i blends a = x_i with b = x_{i+3}, exactly where the mask says.
        expected = mask[..., None] * images[:3] + (1 - mask[..., None]) * images[3:]
        np.testing.assert_allclose(mixed, expected, atol=1e-5)
    else:
        # Pixels taken wholly from b (mask 0) are pixels of x_{i+3} (blocks moved).
        for i in range(3):
            from_b = mixed[i][mask[i] == 0]
            pool = images[i + 3].reshape(-1, 3)
            if len(from_b):
                hits = (np.abs(from_b[:, None, :] - pool[None]).max(-1) < 1e-5).any(1)
                assert hits.all()


@pytest.mark.backend_independent
def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="methods"):
        vm.check_args(2, ["cutmix", "nosuchmix"], None)
    with pytest.raises(ValueError, match="pairs"):
        vm.check_args(0, ["cutmix"], None)
