"""A flag of OpenRLHF's args by its dotted name (``"ds.zero_stage"``): read it from the hierarchized namespace, or
set it there and in the flat argparse namespace, which OpenRLHF's ``__main__`` reads again; and the choices of a flag
that both the parser and CPU mode read. A leaf module: it imports nothing of the package (CPU mode and the coupling both
use it)."""

from __future__ import annotations


#: ``--lens.cpu_dtype``'s values, read by the parser and by CPU mode (``cpu.dtype``), which must not import each other
CPU_DTYPES = ("auto", "bfloat16", "float32")


def get_flag(args, dotted: str):
    """``args.ds.zero_stage`` for ``"ds.zero_stage"``."""
    node = args
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def set_flag(args, flat, dotted: str, value) -> None:
    """Set ``dotted`` to ``value`` in the hierarchized ``args`` and, when given, in the flat namespace ``flat``."""
    node = args
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)
    if flat is not None:
        setattr(flat, dotted, value)
