"""The catalogue: one list of cells, one name per cell, everywhere.

Each cell family's file defines an :class:`Entry`: its canonical name (the only name
the library, tests, benchmarks, reports and command lines use), its factory, a
float64 reference step transcribed from the paper's equations (what the tests and the
benchmark's correctness gate both hold the cell against), its mapping to PyTorch's
module where PyTorch has the cell, and its matmul FLOPs per step. Tests, the benchmark,
:mod:`rnnjax.interop`, the vanishing-gradient study and the command lines read the
catalogue; nothing else keeps a list of cells.

Adding a cell: write ``rnnjax/cells/<family>.py`` (the factory and its ``Entry``) and
add the entry to :data:`BUILTIN` below; or, from your own code,
``rnnjax.cells.register(entry)`` (``registered(entry)`` for the span of a ``with``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

# Entries by name, not modules: the package rebinds each module's name to its factory.
from rnnjax.cells.antisymmetric import ENTRY as ANTISYMMETRIC
from rnnjax.cells.antisymmetric import GATED_ENTRY as ANTISYMMETRIC_GATED
from rnnjax.cells.base import Cell, Entry, TorchMapping
from rnnjax.cells.cornn import ENTRY as CORNN
from rnnjax.cells.elman import RNN_RELU, RNN_TANH
from rnnjax.cells.gru import ENTRY as GRU
from rnnjax.cells.indrnn import ENTRY as INDRNN
from rnnjax.cells.layernorm import LN_GRU, LN_LSTM
from rnnjax.cells.lem import ENTRY as LEM
from rnnjax.cells.lru import ENTRY as LRU
from rnnjax.cells.lstm import ENTRY as LSTM
from rnnjax.cells.mgu import ENTRY as MGU
from rnnjax.cells.minrnn import MIN_GRU, MIN_LSTM
from rnnjax.cells.orthogonal import ENTRY as EXPRNN
from rnnjax.cells.rglru import ENTRY as RG_LRU

__all__ = ["Entry", "TorchMapping", "get", "make_cell", "names", "register", "registered"]


BUILTIN: tuple[Entry, ...] = (
    RNN_TANH,
    RNN_RELU,
    LSTM,
    GRU,
    # Linear in the state (issue 21): the associative scan.
    LRU,
    RG_LRU,
    MIN_GRU,
    MIN_LSTM,
    # The nonlinear families that fight vanishing gradients (issue 20).
    MGU,
    LN_LSTM,
    LN_GRU,
    INDRNN,
    EXPRNN,
    CORNN,
    LEM,
    ANTISYMMETRIC,
    ANTISYMMETRIC_GATED,
)

_ENTRIES: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add ``entry`` to the catalogue (a ``ValueError`` if its name is taken or its
    factory makes a cell of another name)."""
    if not isinstance(entry, Entry):
        raise ValueError(f"register takes a catalogue Entry; got {type(entry).__name__}.")
    if entry.name in _ENTRIES:
        raise ValueError(f"a cell named {entry.name!r} is already in the catalogue.")
    made = entry.make(2).name
    if made != entry.name:
        raise ValueError(
            f"entry {entry.name!r}: its factory makes a cell named {made!r}; the names "
            "must agree (one name everywhere)."
        )
    _ENTRIES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove the cell ``name`` from the catalogue."""
    get(name)
    del _ENTRIES[name]


@contextlib.contextmanager
def registered(entry: Entry) -> Iterator[Entry]:
    """``entry`` in the catalogue for the span of a ``with`` block."""
    register(entry)
    try:
        yield entry
    finally:
        _ENTRIES.pop(entry.name, None)


def get(name: str) -> Entry:
    """The entry named ``name``; a ``ValueError`` listing the names otherwise."""
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell must be one of {names()}; got {name!r}.") from None


def names() -> tuple[str, ...]:
    """Every cell in the catalogue, in the order registered (the built-in ones first)."""
    return tuple(_ENTRIES)


def entries() -> tuple[Entry, ...]:
    return tuple(_ENTRIES.values())


def make_cell(name: str, hidden_size: int, **options) -> Cell:
    """``make_cell("lstm", 64, forget_bias=0.0)``: the catalogue cell ``name``."""
    return get(name).make(hidden_size, **options)


def torch_entry(module) -> Entry:
    """The catalogue entry a PyTorch recurrent module is one layer of (a ``ValueError``
    naming the modules the catalogue maps, if none)."""
    kind = type(module).__name__
    mapped = [e for e in entries() if e.torch is not None]
    same_kind = [e for e in mapped if e.torch.module == kind]
    for entry in same_kind:
        if all(getattr(module, k, None) == v for k, v in entry.torch.options.items()):
            return entry

    def describe(e: Entry) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in e.torch.options.items())
        return f"torch.nn.{e.torch.module}({options})"

    if same_kind:
        got = {k: getattr(module, k, None) for e in same_kind for k in e.torch.options}
        raise ValueError(
            f"torch.nn.{kind} with {', '.join(f'{k}={v!r}' for k, v in got.items())} is "
            f"not supported; the catalogue maps {sorted(map(describe, same_kind))}."
        )
    raise ValueError(f"module must be one of {sorted(map(describe, mapped))}; got {kind}.")


for _entry in BUILTIN:
    register(_entry)
