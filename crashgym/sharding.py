"""Shard a batch of markets over all local JAX devices (a 1-D mesh over the batch axis).

Markets in a batch never talk to each other, so the batch axis splits across devices with no
communication except the batch-level "does any market need ADL" test in
``Market.step_batch`` (one all-reduce of a bool per step).

Indivisible batches are PADDED, not run unsharded: :func:`pad_batch` repeats the last member
until the size is a multiple of the device count, and the caller drops the padding from the
results (:func:`crashgym.rollout.run_batch` does). With one device nothing changes.

Multi-host: call ``jax.distributed.initialize()`` on every host before anything else; then
``jax.devices()`` spans all hosts. These helpers use ``jax.local_devices()`` only (each host
shards its own batch), which is what a single machine can exercise; a global mesh over
``jax.devices()`` is the step to take for one batch spanning hosts (see
docs/obligations_and_rules.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MESH_AXIS = "batch"

__all__ = ["MESH_AXIS", "batch_mesh", "batch_sharding", "pad_batch", "padded_size", "shard", "constrain"]


def batch_mesh(devices: list[Any] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``'batch'`` over ``devices`` (default: all local devices)."""
    devs = jax.local_devices() if devices is None else devices
    return jax.sharding.Mesh(np.array(devs), (MESH_AXIS,))


def batch_sharding(devices: list[Any] | None = None) -> jax.sharding.NamedSharding | None:
    """Sharding of a leading batch axis over the mesh; None with a single device (nothing to do)."""
    devs = jax.local_devices() if devices is None else devices
    if len(devs) <= 1:
        return None
    return jax.sharding.NamedSharding(batch_mesh(devs), jax.sharding.PartitionSpec(MESH_AXIS))


def padded_size(batch: int, n_devices: int) -> int:
    """Smallest multiple of n_devices that is >= batch."""
    n = max(int(n_devices), 1)
    return -(-int(batch) // n) * n


def pad_batch(tree: Any, size: int) -> Any:
    """Pad every leaf's leading axis to ``size`` by repeating its last entry (a no-op when equal)."""

    def pad(x: Any) -> Any:
        x = jnp.asarray(x)
        extra = size - x.shape[0]
        if extra < 0:
            raise ValueError(f"pad_batch: batch of {x.shape[0]} is larger than {size}")
        if extra == 0:
            return x
        return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)

    return jax.tree.map(pad, tree)


def shard(tree: Any, sharding: jax.sharding.NamedSharding | None) -> Any:
    """Place a batched pytree's leaves split along axis 0 (as is, when sharding is None)."""
    return tree if sharding is None else jax.device_put(tree, sharding)


def constrain(tree: Any, sharding: jax.sharding.NamedSharding | None) -> Any:
    """Inside jit: keep a batched pytree split along axis 0 (so XLA does not gather it)."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)
