"""Random streams that survive saving: the seed states of a model's generators.

Keras keeps a layer's `keras.random.SeedGenerator`s in `_seed_generators`
and adds their states to `layer.variables` (so they are JAX state and
`tf.function` captures), but `save_own_variables` stores only weights. A
resumed run would then draw epoch 1's λ and pairings again. `SeedStateMixin`
stores every generator state of the model and its sub-layers next to the
model's own variables, so `model.save` / `keras.saving.load_model` and
`save_weights` / `load_weights` (what `keras.callbacks.BackupAndRestore`
uses) continue the streams where they stopped.
"""

import warnings

from keras import ops

# Key prefix of the seed-generator states in the model's own weights entry
# (next to Keras' "0", "1", ... of its own variables).
SEED_STATE_KEY = "seed_generator_state_"


class SeedStateMixin:
    """Saves and restores the states of every `SeedGenerator` of a `keras.Model`."""

    def seed_generators(self):
        """Every `SeedGenerator` of the model and its sub-layers, each once.

        The order (layer tracking order, depth first) is fixed by the
        constructor, so a model rebuilt from the same config lists its
        generators in the same order.
        """
        generators, seen = [], set()
        for layer in self._flatten_layers(include_self=True, recursive=True):
            for generator in getattr(layer, "_seed_generators", ()):
                if id(generator) not in seen:
                    seen.add(id(generator))
                    generators.append(generator)
        return generators

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, generator in enumerate(self.seed_generators()):
            store[f"{SEED_STATE_KEY}{i}"] = generator.state

    def load_own_variables(self, store):
        keys = list(store.keys())
        seed_keys = [k for k in keys if k.startswith(SEED_STATE_KEY)]
        generators = self.seed_generators()
        if seed_keys and len(seed_keys) != len(generators):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' has {len(generators)} seed "
                f"generator(s), but the weights file stores {len(seed_keys)} seed "
                "state(s): it was saved from a model with a different configuration."
            )
        if not seed_keys and generators:
            # Files written before the seed states were saved.
            warnings.warn(
                f"The weights of {type(self).__name__} '{self.name}' carry no seed "
                "generator state (saved by an older keras-amix); the random streams "
                "(λ, pairings) restart from their initial seeds.",
                stacklevel=2,
            )
        for i, generator in enumerate(generators[:len(seed_keys)]):
            generator.state.assign(
                ops.cast(store[f"{SEED_STATE_KEY}{i}"], generator.state.dtype))
        super().load_own_variables({k: store[k] for k in keys if k not in seed_keys})
