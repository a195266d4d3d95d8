"""The built-in mixers' names and default α, in plain Python (no imports).

The mixer classes read their `default_alpha` from here, and the binaries in
`experiments/` read this file as a plain file (`runpy.run_path`) to check
`--method` and fill in `--alpha` before Keras is imported (importing
`keras_amix` imports Keras). `tests/mixers/test_registry.py` asserts that it
matches the registry.

A new built-in mixer is its file, its `@register`, one line in
`DEFAULT_ALPHA` (and in `CROSS_VIEW` if it mixes two images alone), and its
tests.
"""

# λ ~ Beta(α, α): the α the CIFAR grid search over {0.2, 0.5, 1, 2, 4} picks
# for each method (AMix paper §4.1; OpenMixup's CIFAR configs). The order is
# the order the binaries list the methods in. The self-supervised cross-view
# runs use the same values.
DEFAULT_ALPHA = {
    "mixup": 1.0,
    "cutmix": 0.2,
    "saliencymix": 0.2,
    "fmix": 0.2,
    "resizemix": 1.0,
    "puzzlemix": 1.0,
    "comixup": 2.0,
    "manifoldmix": 2.0,
}

# The mixers that need nothing but the two images (no saliency input, no
# hidden features): the ones `models.MoCoV2`'s cross-view pipeline accepts.
CROSS_VIEW = ("mixup", "cutmix", "saliencymix", "fmix", "resizemix")
