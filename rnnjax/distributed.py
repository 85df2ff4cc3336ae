"""Many devices on JAX's own runtime: a mesh, shardings, and a train step placed on them.

No communication code lives here. A ``jax.sharding.Mesh`` with one axis, ``"data"``,
spans the devices; :func:`parallel_step` jit-compiles an unchanged train step with
input and output shardings and XLA inserts the collectives (the all-reduce of the
gradients when the batch is split). Two layouts:

* ``"data"``: every device holds the whole train state (replicated) and a slice of
  the batch. The global batch is the user's number; the result is the one-device
  result up to the order of floating-point sums.
* ``"seeds"``: for states with a leading seed axis (``rnnjax.train.vmap_seeds``),
  each device holds whole seeds: their state and their batches. Nothing is
  communicated; ``S`` seeds on ``S`` devices run side by side.

The same code runs on host CPUs (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
makes ``N`` of them, how the tests prove it), GPUs and TPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
LAYOUTS = ("data", "seeds")


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"data"`` over ``devices``: a list, a count (the first
    ``n`` of ``jax.devices()``), or ``None`` for all of them."""
    available = jax.devices()
    if devices is None:
        chosen = available
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must lie in [1, {len(available)}] (the devices JAX sees: "
                f"{available[0].platform} x {len(available)}); got {devices}."
            )
        chosen = available[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices must not be empty.")
    return Mesh(np.array(chosen), (DATA,))


def _spec(axis: int) -> P:
    return P(*([None] * axis), DATA)


def shard(tree: Any, mesh: Mesh, axis: int) -> Any:
    """Place ``tree`` with dimension ``axis`` of every leaf split over the mesh.

    Raises:
      ValueError: a leaf has no dimension ``axis`` or its size is not divisible by the
        number of devices (naming the leaf, its shape and the device count).
    """
    n = mesh.size
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        if len(shape) <= axis or shape[axis] % n:
            raise ValueError(
                f"{jax.tree_util.keystr(path) or 'value'} has shape {shape}: dimension "
                f"{axis} must exist and be divisible by the {n} devices of the mesh."
            )
    return jax.device_put(tree, NamedSharding(mesh, _spec(axis)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place a full copy of ``tree`` on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def parallel_step(
    train_step: Callable[[Any, Any], tuple[Any, Any]],
    mesh: Mesh,
    layout: str = "data",
    *,
    batch_axis: int = 0,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """``train_step(state, batch) -> (state, metrics)`` jit-compiled onto ``mesh``.

    Args:
      train_step: the pure step (from :func:`rnnjax.train.make_train_step`, possibly
        under :func:`~rnnjax.train.vmap_seeds`); not yet jitted.
      mesh: from :func:`data_mesh`.
      layout: ``"data"`` (batch split along ``batch_axis``, state replicated) or
        ``"seeds"`` (state, batch and metrics split along their leading seed axis).
      batch_axis: the batch dimension of every batch leaf for ``"data"`` (1 when the
        batch has a leading seed axis).

    Returns:
      ``step(state, batch)``; it places its inputs (a host batch is split as it is
      copied) and returns the state with the layout's sharding, ready for the next step.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    if layout == "data":
        state_sh = NamedSharding(mesh, P())
        batch_sh = NamedSharding(mesh, _spec(batch_axis))
        metrics_sh = state_sh
    else:
        state_sh = batch_sh = metrics_sh = NamedSharding(mesh, _spec(0))
        batch_axis = 0
    jitted = jax.jit(
        train_step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, metrics_sh)
    )

    def step(state, batch):
        # The state comes back from the last step already placed: move it only when it
        # is not (the first step, or a state restored on another device count).
        leaves = jax.tree.leaves(state)
        if leaves and getattr(leaves[0], "sharding", None) != state_sh:
            state = place_state(state, mesh, layout)
        return jitted(state, shard(batch, mesh, batch_axis))

    return step


def place_state(state: Any, mesh: Mesh, layout: str = "data") -> Any:
    """Put a train state where :func:`parallel_step` expects it (e.g. after init or a
    restore onto another number of devices)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}.")
    return replicate(state, mesh) if layout == "data" else shard(state, mesh, 0)


def initialize(env: Mapping[str, str] | None = None) -> bool:
    """Join a multi-process run with ``jax.distributed.initialize``, from the environment.

    * ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
      ``JAX_PROCESS_ID``: passed as they are (any launcher, or by hand).
    * else a SLURM job step with more than one task, or an Open MPI launch: JAX's own
      cluster detection fills in everything.
    * else nothing happens: one process.

    Call it before any other JAX call. Returns whether a multi-process run was joined.
    """
    env = os.environ if env is None else env
    address = env.get("JAX_COORDINATOR_ADDRESS")
    if address:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS is set ({address!r}) but {missing} are not; "
                "set all three, or none."
            )
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
        return True
    if int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))) > 1 or (
        "OMPI_COMM_WORLD_SIZE" in env and int(env["OMPI_COMM_WORLD_SIZE"]) > 1
    ):
        jax.distributed.initialize()
        return True
    return False
