"""Declared patches: every replacement of an upstream attribute is one :class:`Patch` in a :class:`PatchTable`.

lens_openrlhf changes OpenRLHF (and, in CPU mode, DeepSpeed/vLLM glue) in a few named places. Each place
is one entry saying what it replaces (``target``, a ``"module:Qualified.name"``), with what, why, and the
fingerprint of what it replaces in the pinned release: a hash of the source the patch was written against
(the target's own source, or the ``watch`` list when the patch depends on code around it, e.g. a call
site that passes an argument by position). One ``apply`` / ``revert`` / ``status`` serves the driver,
the Ray worker hook and the tests; ``drift()`` names the entries whose fingerprint no longer matches the
installed code, i.e. what to re-review when upstream releases.

Pure Python: importing this module imports nothing heavy; targets are imported when a table is applied
or fingerprinted.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import types
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import UpstreamChanged

_MISSING = object()


def ray_actor_classes(actor) -> List[type]:
    """The classes behind a ``@ray.remote`` class: the subclass Ray builds at decoration time (it copies every
    method into itself as a wrapper closing over the function of that moment, and the driver pickles it BY
    VALUE) and the user's class. A patch of a remote class's method is set on both. Reads Ray private
    attributes (``__ray_metadata__.modified_class``, ``__ray_actor_class__``), so it fails loudly, naming
    the class, when Ray changes them."""
    modified = getattr(getattr(actor, "__ray_metadata__", None), "modified_class", None)
    if modified is None:
        raise UpstreamChanged(f"cannot find the class behind ray.remote {actor!r} (Ray's __ray_metadata__ changed?)")
    return [c for c in (modified, getattr(modified, "__ray_actor_class__", None)) if c is not None]


def resolve(path: str):
    """``"pkg.module:Qual.name"`` -> the object (class attributes read from ``__dict__``: raw functions; a
    ``@ray.remote`` class is read through the user's class behind it)."""
    module, _, qual = path.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, qual.split(".")):
        if hasattr(obj, "__ray_metadata__") and not isinstance(obj, type):
            obj = ray_actor_classes(obj)[-1]
        d = getattr(obj, "__dict__", {})
        obj = d[part] if part in d else getattr(obj, part)
    return obj


def _parent_and_name(path: str) -> Tuple[object, str]:
    module, _, qual = path.partition(":")
    parent_qual, _, name = qual.rpartition(".")
    return resolve(f"{module}:{parent_qual}"), name


def source_text(path: str) -> str:
    """The source a fingerprint hashes: a function's or class's own source; for any other value (a module
    global such as ``torch`` or an imported class) the source of the module that holds it."""
    replaced = {t_p.target: t.original(t_p.id) for t in _TABLES for t_p in t.entries if t_p.id in t._saved}
    obj = replaced[path] if path in replaced else resolve(path)  # what upstream has, even where we patched it
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, (types.FunctionType, type)):
        try:
            return inspect.getsource(inspect.unwrap(obj))
        except (OSError, TypeError):
            pass
    holder = importlib.import_module(path.partition(":")[0])
    return inspect.getsource(holder)


def fingerprint(paths: Sequence[str]) -> str:
    """12 hex digits of sha256 over the sources of ``paths`` (see :func:`source_text`)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode())
        h.update(b"\0")
        h.update(source_text(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Patch:
    """One replacement. ``owners`` (optional) lists where to set it when that is more than the target's
    parent (e.g. the classes Ray builds behind ``@ray.remote``, which copy methods at import time); the
    first owner's value is the original. ``tag``: applied only when the table is applied with that tag. ``tests``: the
    test files that re-check the patch's behaviour against the installed upstream (run them after a re-review).
    ``call_sites``: ``("module:Qual.name", "expression")`` pairs, upstream code that must keep calling or reading what
    the patch relies on (checked in the installed source by ``tests/test_patch_table.py``)."""

    id: str
    target: str
    replacement: object
    why: str
    fingerprint: str
    watch: Tuple[str, ...] = ()
    owners: Optional[Callable[[], List[object]]] = None
    tag: Optional[str] = None
    tests: Tuple[str, ...] = ()
    call_sites: Tuple[Tuple[str, str], ...] = ()

    @property
    def watched(self) -> Tuple[str, ...]:
        return self.watch or (self.target,)

    @property
    def name(self) -> str:
        return self.target.rpartition(":")[2].rpartition(".")[2]

    def where(self) -> List[object]:
        if self.owners is not None:
            return list(self.owners())
        return [_parent_and_name(self.target)[0]]

    def current_fingerprint(self) -> str:
        return fingerprint(self.watched)


@dataclass
class PatchTable:
    """A named list of patches with one apply / revert / status / drift for all of them."""

    name: str
    entries: Tuple[Patch, ...]
    _saved: Dict[str, List[Tuple[object, bool, object]]] = field(default_factory=dict)
    _originals: Dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        ids = [p.id for p in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.name}: duplicate patch ids {ids}")
        _TABLES.append(self)

    def __getitem__(self, pid: str) -> Patch:
        for p in self.entries:
            if p.id == pid:
                return p
        raise KeyError(f"{self.name} has no patch {pid!r}")

    def selected(self, tags: Iterable[str] = ()) -> List[Patch]:
        tags = set(tags)
        return [p for p in self.entries if p.tag is None or p.tag in tags]

    def apply(self, tags: Iterable[str] = ()) -> None:
        """Apply the untagged entries and those tagged with one of ``tags`` in this process (idempotent)."""
        for p in self.selected(tags):
            if p.id in self._saved:
                continue
            saved = []
            for owner in p.where():
                d = getattr(owner, "__dict__", {})
                had = p.name in d
                saved.append((owner, had, d[p.name] if had else _MISSING))
            first_owner, had, old = saved[0]
            self._originals[p.id] = old if had else getattr(first_owner, p.name)
            for owner, _, _ in saved:
                setattr(owner, p.name, p.replacement)
            self._saved[p.id] = saved

    def revert(self, only: Optional[Iterable[str]] = None) -> None:
        """Put the applied entries' original values back (all, or the ids in ``only``), newest first."""
        keep = None if only is None else set(only)
        for pid in reversed(list(self._saved)):
            if keep is not None and pid not in keep:
                continue
            name = self[pid].name
            for owner, had, old in self._saved.pop(pid):
                if had:
                    setattr(owner, name, old)
                else:
                    delattr(owner, name)
            self._originals.pop(pid, None)

    def original(self, pid: str):
        """What entry ``pid`` replaced (its first owner's value), for the replacement to call.

        Where the table was not applied in this process, the upstream attribute as this process has it: Ray pickles a
        ``@ray.remote`` class by value, so a replacement set on it in the driver can run in a worker whose own table
        was never applied (a Ray cluster started without our worker hook)."""
        try:
            return self._originals[pid]
        except KeyError:
            pass
        patch = self[pid]
        current = resolve(patch.target)
        if current is patch.replacement or getattr(current, "__func__", None) is patch.replacement:
            raise RuntimeError(f"{self.name} patch {pid}: its original is not known in this process")
        return current

    def applied(self) -> List[str]:
        return list(self._saved)

    def status(self) -> Dict[str, bool]:
        """Entry id -> whether every owner currently holds the replacement (applied or not by this table)."""
        out = {}
        for p in self.entries:
            try:
                out[p.id] = all(
                    getattr(o, "__dict__", {}).get(p.name, getattr(o, p.name, None)) is p.replacement for o in p.where()
                )
            except Exception:  # noqa: BLE001 - a target that cannot be resolved is not applied
                out[p.id] = False
        return out

    def drift(self) -> List[str]:
        """One line per entry whose fingerprint differs from the recorded one (or whose target is gone)."""
        lines = []
        for p in self.entries:
            try:
                now = p.current_fingerprint()
            except Exception as e:  # noqa: BLE001 - a target that vanished is drift too
                lines.append(f"{self.name} {p.id} {p.target}: cannot read it ({type(e).__name__}: {e}); why: {p.why}")
                continue
            if now != p.fingerprint:
                lines.append(
                    f"{self.name} {p.id} {p.target}: fingerprint {now}, written against {p.fingerprint} "
                    f"(watched: {', '.join(p.watched)}); why: {p.why}"
                )
        return lines

    def check(self) -> None:
        """Raise :class:`UpstreamChanged` listing :meth:`drift`, if any."""
        lines = self.drift()
        if lines:
            raise UpstreamChanged("re-review these patches:\n  " + "\n  ".join(lines))


_TABLES: List[PatchTable] = []


def applied() -> Dict[str, List[str]]:
    """Table name -> ids applied in this process."""
    return {t.name: t.applied() for t in _TABLES}


def revert_all(since: Optional[Dict[str, List[str]]] = None) -> None:
    """Revert every applied entry of every table, or only those applied after the snapshot ``since``
    (:func:`applied`); tests call it between tests."""
    for t in reversed(_TABLES):
        t.revert(None if since is None else set(t.applied()) - set(since.get(t.name, ())))


def original(table: str, pid: str):
    """What entry ``pid`` of the table named ``table`` replaced, for replacements to call without importing
    the module that defines the table (which imports them)."""
    for t in _TABLES:
        if t.name == table:
            return t.original(pid)
    raise RuntimeError(f"no patch table {table!r} is defined in this process")
