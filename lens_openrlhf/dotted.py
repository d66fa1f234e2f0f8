"""A flag of OpenRLHF's args by its dotted name (``"ds.zero_stage"``): read or set it in the hierarchized namespace,
the one copy of a run's args in the driver; :func:`flatten` turns that namespace back into the flat argparse namespace
that OpenRLHF's ``__main__`` hierarchizes again. And the choices of a flag that both the parser and CPU mode read. A
leaf module: it imports nothing of the package (CPU mode and the coupling both use it)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace


#: ``--lens.cpu_dtype``'s values, read by the parser and by CPU mode (``cpu.dtype``), which must not import each other
CPU_DTYPES = ("auto", "bfloat16", "float32")


def get_flag(args, dotted: str):
    """``args.ds.zero_stage`` for ``"ds.zero_stage"``."""
    node = args
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def set_flag(args, dotted: str, value) -> None:
    """Set ``dotted`` to ``value`` in the hierarchized ``args``."""
    node = args
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, value)


def flatten(args) -> argparse.Namespace:
    """The flat argparse namespace (``{"ds.zero_stage": 3, ...}``) of hierarchized ``args``: the inverse of
    OpenRLHF's ``openrlhf.utils.config.hierarchize``, which nests the flat namespace at every dot."""
    flat = {}

    def walk(node, prefix: str) -> None:
        for key, value in vars(node).items():
            if isinstance(value, SimpleNamespace):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(args, "")
    return argparse.Namespace(**flat)
