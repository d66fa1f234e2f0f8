"""Moving to another OpenRLHF release: what of ours depends on upstream code, and whether it still matches.

    python -m lens_openrlhf.coupling.upstream [--all]

Prints the pinned and the installed OpenRLHF, then one line per patch of the coupling table and of CPU mode's table:
its id, ``ok`` or ``CHANGED`` (the fingerprint of the upstream source it was written against, recomputed from the
installed packages) or ``MISSING`` (the target is gone), what it replaces, and the tests that re-check it. Exit
status 0 when every fingerprint matches the installed packages, 1 otherwise. ``--all`` lists the matching entries
too (by default only the changed ones and a count). The procedure around it is docs/upgrading-openrlhf.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from .version import OPENRLHF_VERSION, installed_openrlhf_version


def entries():
    """(table name, patch) for every patch of the coupling and CPU mode (imports both tables, not their targets)."""
    from ..cpu.patches import CPU
    from .patches import COUPLING

    return [(t.name, p) for t in (COUPLING, CPU) for p in t.entries]


def status(patch) -> str:
    try:
        now = patch.current_fingerprint()
    except Exception:  # noqa: BLE001 - a target that vanished is drift too
        return "MISSING"
    return "ok" if now == patch.fingerprint else "CHANGED"


def report(show_all: bool = False) -> List[str]:
    """The lines :func:`main` prints; the last one says how many entries changed."""
    installed = installed_openrlhf_version() or "not installed"
    lines = [f"OpenRLHF: pinned {OPENRLHF_VERSION}, installed {installed}"]
    changed = 0
    for table, p in entries():
        st = status(p)
        changed += st != "ok"
        if st != "ok" or show_all:
            tests = ", ".join(p.tests) or "tests/test_patch_table.py"
            lines.append(f"{table:8s} {p.id:5s} {st:8s} {p.target}")
            lines.append(f"{'':23s}why: {p.why}")
            lines.append(f"{'':23s}re-checked by: {tests}")
    total = len(entries())
    lines.append(
        f"{total - changed} of {total} patches match the installed packages"
        + ("" if not changed else f"; {changed} to re-review (docs/upgrading-openrlhf.md)")
    )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lens_openrlhf.coupling.upstream", description=__doc__)
    p.add_argument("--all", action="store_true", help="list every patch, not only the changed ones")
    a = p.parse_args(argv)
    from ..cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()  # OpenRLHF's modules import flash_attn (a no-op where it is installed)
    lines = report(a.all)
    print("\n".join(lines))
    return 0 if lines[-1].startswith(f"{len(entries())} of") else 1


if __name__ == "__main__":
    sys.exit(main())
