"""Checkpoints with orbax-checkpoint: atomic saves, keep the last K, verified restores.

Orbax writes each step into a temporary folder and renames it into place when the
write is complete, so a crash mid-save never leaves a half-written step that looks
finished. On top of that every save records a checksum of the state's bytes; a restore
that fails or reads bytes with another checksum (a truncated or corrupted file) is
reported and skipped in favour of the previous step.

Sharded state saves as it lies: in a multi-process run every process calls
:meth:`Checkpointer.save` and writes the shards its devices hold (orbax coordinates
them), and a restore reads into the shardings of ``like``, so a run saved on N devices
resumes on M.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rnnjax.distributed import to_host


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was skipped."""


class CheckpointMismatchError(ValueError):
    """``like`` does not have the saved state's structure, shapes or dtypes: a wrong
    template, not a damaged checkpoint (so it is raised, never skipped)."""


RESERVED = ("step", "checksum", "leaves")


def _signature(tree) -> list[list]:
    """``[path, dtype, shape]`` of every leaf, in tree order (JSON-friendly)."""
    leaves = jax.tree_util.tree_flatten_with_path(
        jax.tree.map(_abstract, tree)
    )[0]
    return [
        [jax.tree_util.keystr(path), _dtype_name(leaf.dtype), list(leaf.shape)]
        for path, leaf in leaves
    ]


def _abstract(leaf):
    # The leaf's own shape and dtype: orbax's to_shape_dtype_struct describes a concrete
    # typed key by its key data (uint32[2]) and an abstract one as key<fry>[].
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
    return ocp.utils.to_shape_dtype_struct(leaf)


def _dtype_name(dtype) -> str:
    # A typed PRNG key's dtype (``key<fry>``) is no NumPy dtype; its name is its own.
    return str(dtype) if jnp.issubdtype(dtype, jax.dtypes.prng_key) else str(np.dtype(dtype))


def state_checksum(tree) -> str:
    """SHA-256 over the dtype, shape and bytes of every leaf, in tree order.

    Typed PRNG keys count by their key data and implementation. Leaves spread over
    several processes are gathered first (every process computes the same checksum;
    see :func:`rnnjax.distributed.to_host`).
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.result_type(leaf), jax.dtypes.prng_key):
            # A typed key (an NNX model's rng streams): its key data, with the
            # implementation's name so that two kinds of key never collide.
            digest.update(str(jax.random.key_impl(leaf)).encode())
            leaf = jax.random.key_data(leaf)
        arr = to_host(leaf)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _describe_leaves(saved: list, like: list) -> str:
    (p, dt, sh), (q, dt2, sh2) = saved, like
    if p == q:
        return f"{p}: saved {dt}{list(sh)}, like {dt2}{list(sh2)}"
    return f"saved {p} {dt}{list(sh)}, like {q} {dt2}{list(sh2)}"


class Checkpointer:
    """Save and restore a pytree of arrays every N steps, keeping the last K.

    Args:
      directory: where the step folders go (created if missing).
      max_to_keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3):
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"max_to_keep must be an int >= 1; got {max_to_keep!r}.")
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def save(self, step: int, state, *, metadata: dict | None = None) -> None:
        """Save ``state`` as ``step`` (waits until it is on disk, so it is complete).

        A step already in the directory is replaced: a run that resumed from an earlier
        step because this one was unreadable writes it again. ``metadata`` is saved
        beside the state; its keys must not be one of :data:`RESERVED`.
        """
        clash = sorted(set(metadata or {}) & set(RESERVED))
        if clash:
            raise ValueError(
                f"metadata must not use the keys {list(RESERVED)}, which the checkpoint "
                f"records itself; got {clash}."
            )
        meta = {
            "step": int(step),
            "checksum": state_checksum(state),
            "leaves": _signature(state),
            **(metadata or {}),
        }
        if int(step) in self._manager.all_steps():
            self._manager.delete(int(step))
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def metadata(self, step: int) -> dict:
        """The JSON saved beside ``step``'s state: its step, checksum and any extras."""
        restored = self._manager.restore(
            int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )
        return dict(restored["meta"])

    def restore(self, step: int, like):
        """Restore ``step`` into the structure, shapes and dtypes of ``like``; verified.

        Raises:
          CheckpointMismatchError: ``like``'s leaves (paths, dtypes, shapes) are not the
            saved ones (checkpoints saved before this check existed are not compared).
          ValueError: the bytes read do not match the checksum saved with them.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        saved = self.metadata(step).get("leaves")
        if saved is not None:
            want = _signature(abstract)
            if saved != want:
                diff = [_describe_leaves(a, b) for a, b in zip(saved, want) if a != b][:3]
                if len(saved) != len(want):
                    diff.insert(0, f"saved {len(saved)} leaves, like {len(want)}")
                raise CheckpointMismatchError(
                    f"like does not match the state saved at step {step} in "
                    f"{self.directory}: {'; '.join(diff)}."
                )
        restored = self._manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored["state"], restored["meta"]
        if meta.get("checksum") != state_checksum(state):
            raise ValueError(f"checkpoint at step {step} does not match its checksum")
        return state, meta

    def restore_latest(self, like):
        """``(step, state, meta)`` of the newest checkpoint that restores cleanly, or None.

        A checkpoint that fails to restore (missing or truncated files, a checksum
        mismatch) is reported with a :class:`CheckpointWarning` and skipped. A ``like``
        that does not match the saved state raises :class:`CheckpointMismatchError`:
        every step would be skipped, and a run would quietly start afresh.
        """
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, like)
            except CheckpointMismatchError:
                raise
            except Exception as err:  # noqa: BLE001  any failure means: not usable
                warnings.warn(
                    f"checkpoint at step {step} in {self.directory} is unreadable "
                    f"({type(err).__name__}: {str(err)[:200]}); trying the previous one.",
                    CheckpointWarning,
                    stacklevel=2,
                )
                continue
            return step, state, meta
        return None

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
