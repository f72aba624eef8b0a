"""Named random streams: one independent torch.Generator per consumer, all derived from a run's seed.

A run's consumers (initial latents, the objective's real batches, its networks, DSA, ...) each draw from
their own stream, so changing what one consumer does (or whether it runs at all, like the distance's
real set) leaves every other consumer's draws bit-identical. That is what makes two runs at one seed a
paired comparison: H-PD, GLaD and Pixel see the same real batches, networks and augmentations at every
step, and selection bases differ only in which latent they keep.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch

MAX_SEED = 2**63 - 1


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream `name` of `seed`: SeedSequence mixes the two, so streams do not overlap."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    key = zlib.crc32(name.encode())  # stable across Python versions, unlike hash()
    state = np.random.SeedSequence(entropy=seed, spawn_key=(key,)).generate_state(1, np.uint64)
    return int(state[0]) & MAX_SEED


class Streams:
    """Generators by name, created on first use; `state_dict()` captures every stream drawn so far."""

    def __init__(self, seed: int):
        stream_seed(seed, "")  # validates the seed once, here
        self.seed = seed
        self._gens: dict[str, torch.Generator] = {}

    def __getitem__(self, name: str) -> torch.Generator:
        gen = self._gens.get(name)
        if gen is None:
            gen = self._gens[name] = torch.Generator().manual_seed(stream_seed(self.seed, name))
        return gen

    def seed_for(self, name: str) -> int:
        """A plain integer seed for consumers that seed themselves (e.g. evaluation networks)."""
        return stream_seed(self.seed, name) & (2**31 - 1)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "streams": {name: g.get_state() for name, g in self._gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"these random streams belong to seed {state.get('seed')}, not {self.seed}")
        for name, value in state["streams"].items():
            self[name].set_state(value)
