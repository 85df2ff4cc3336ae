"""Checks at the boundary, written once: sizes and integer ids in a range.

Concrete values are checked at once, before any work, with a ``ValueError`` that names
the argument, what was expected and what was given. Values traced under ``jit`` cannot
be read while tracing; they are checked with ``jax.experimental.checkify.debug_check``,
which costs nothing unless the caller wraps the function in ``checkify.checkify``, so a
compiled training step holds no host callback (README, "Checks").
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` (NumPy integers too); a ``ValueError`` naming ``name``
    unless it is a positive integer (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")
    return int(value)


def check_in_range(
    name: str, values, low: int, high: int, what: str = "", verb: str = "lie in"
) -> None:
    """Every entry of the integer array ``values`` in ``[low, high)``; a ``ValueError``
    naming ``name``, the range (``what`` says what it is) and the offending values
    (``"{name} must {verb} [low, high) (what); got ..."``). Traced values: a
    ``checkify.debug_check`` (see the module's docstring)."""
    where = f" ({what})" if what else ""
    if isinstance(values, jax.core.Tracer):
        values = jnp.asarray(values)
        checkify.debug_check(
            jnp.all((values >= low) & (values < high)),
            f"{name} must {verb} [{low}, {high}){where}; got min {{lo}}, max {{hi}}.",
            lo=jnp.min(values, initial=low),
            hi=jnp.max(values, initial=low),
        )
        return
    array = np.asarray(values)
    bad = (array < low) | (array >= high)
    if bad.any():
        raise ValueError(
            f"{name} must {verb} [{low}, {high}){where}; got values "
            f"{array[bad].ravel()[:8].tolist()} (min {array.min()}, max {array.max()})."
        )
