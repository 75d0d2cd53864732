"""Carry a pytree across a jit boundary as one flat buffer per dtype.

A jitted call pays a fixed host cost per argument and per result buffer (~3 us per output
on CPU): returning the env state's 72 leaves alone took ~200 us, about half of a
single-env step before packing. Packed, a step takes and returns a handful of buffers; packing
and unpacking are slices and concatenations inside the jitted call, exact (no casts).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class TreePacker:
    """Packs trees shaped like `example` (arrays or ShapeDtypeStructs) into a tuple of 1-D
    buffers, one per dtype, each leaf a contiguous block (so unpacking is a slice and a
    reshape), and back."""

    def __init__(self, example: Any):
        leaves, self.treedef = jax.tree_util.tree_flatten(example)
        self.dtypes = sorted({np.dtype(leaf.dtype) for leaf in leaves}, key=str)
        self.layout: list[tuple[int, int, tuple[int, ...]]] = []  # (buffer, offset, shape) per leaf
        used = [0] * len(self.dtypes)
        for leaf in leaves:
            g = self.dtypes.index(np.dtype(leaf.dtype))
            shape = tuple(leaf.shape)
            self.layout.append((g, used[g], shape))
            used[g] += int(np.prod(shape))

    def pack(self, tree: Any) -> tuple[Array, ...]:
        leaves = self.treedef.flatten_up_to(tree)
        groups: list[list[Array]] = [[] for _ in self.dtypes]
        for leaf, (g, _, _) in zip(leaves, self.layout):
            groups[g].append(jnp.ravel(leaf))
        return tuple(jnp.concatenate(parts) for parts in groups)

    def unpack(self, buffers: tuple[Array, ...]) -> Any:
        leaves = []
        for g, offset, shape in self.layout:
            size = int(np.prod(shape))
            leaves.append(jnp.reshape(buffers[g][offset:offset + size], shape))
        return jax.tree_util.tree_unflatten(self.treedef, leaves)
