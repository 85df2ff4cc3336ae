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
import numpy as np
import orbax.checkpoint as ocp

from rnnjax.distributed import to_host


class CheckpointWarning(UserWarning):
    """A checkpoint could not be restored and was skipped."""


def state_checksum(tree) -> str:
    """SHA-256 over the dtype, shape and bytes of every leaf, in tree order.

    Leaves spread over several processes are gathered first (every process computes
    the same checksum; see :func:`rnnjax.distributed.to_host`).
    """
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        arr = to_host(leaf)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


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
        """Save ``state`` as ``step`` (waits until it is on disk, so it is complete)."""
        meta = {"step": int(step), "checksum": state_checksum(state), **(metadata or {})}
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
        """Restore ``step`` into the structure, shapes and dtypes of ``like``; verified."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
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
        mismatch) is reported with a :class:`CheckpointWarning` and skipped.
        """
        for step in reversed(self.steps()):
            try:
                state, meta = self.restore(step, like)
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
