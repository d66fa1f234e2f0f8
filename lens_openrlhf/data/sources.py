"""Reading the data tool's sources: local ``.jsonl`` / ``.json`` / ``.parquet`` files or folders of them, or hub
datasets ``hf:REPO[:CONFIG[,CONFIG...]][@SPLIT]`` through ``datasets.load_dataset``. Errors are
:class:`DataError`, naming the flag and the file (and line or column)."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple


class DataError(ValueError):
    """A source that cannot be read as the schema it is given for (names the flag/file and column)."""


@dataclass
class Row:
    """A raw record with where it came from: ``ref`` is "<file or dataset>#<row index>"."""

    ref: str
    record: dict
    origin: str  # the file (or hub dataset) it came from, for error messages


_HUB_RE = re.compile(r"^hf:(?P<repo>[^:@]+)(?::(?P<configs>[^@]+))?(?:@(?P<split>.+))?$")


def load_source(
    spec: str, flag: str, default_split: str = "train", columns: Optional[Sequence[str]] = None
) -> Tuple[List[Row], List[str]]:
    """Rows of a source spec, plus the origins (files) read. ``flag`` names the CLI flag in errors.

    ``columns``: read only these (those present; the big sources carry long solution texts we do not need).
    """
    if spec.startswith("hf:"):
        return _load_hub(spec, flag, default_split, columns)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{flag} {spec!r}: no such file or directory (write hub datasets as hf:REPO[:CONFIG][@SPLIT])")
    files = _data_files(path, flag)
    rows: List[Row] = []
    for f in files:
        rows.extend(_read_file(f, columns))
    return rows, [str(f) for f in files]


def _data_files(path: Path, flag: str) -> List[Path]:
    exts = (".jsonl", ".json", ".parquet")
    if path.is_file():
        if not path.name.endswith(exts):
            raise DataError(f"{flag} {path}: unsupported file type (use .jsonl, .json or .parquet)")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(exts))
    if not files:
        raise DataError(f"{flag} {path}: directory holds no .jsonl, .json or .parquet file")
    return files


def _read_file(path: Path, columns: Optional[Sequence[str]] = None) -> List[Row]:
    name = path.name
    keep = set(columns) if columns else None

    def trim(rec):
        return {k: v for k, v in rec.items() if k in keep} if keep is not None and isinstance(rec, dict) else rec

    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            present = pq.read_schema(path).names
            wanted = [c for c in present if keep is None or c in keep]
            records = pq.read_table(path, columns=wanted).to_pylist()
        except Exception as e:
            raise DataError(f"{path}: cannot read as parquet: {e}") from e
        return [Row(f"{name}#{i}", r, str(path)) for i, r in enumerate(records)]
    text = path.read_text(encoding="utf-8")
    if name.endswith(".json") and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON: {e}") from e
        if not all(isinstance(r, dict) for r in records):
            raise DataError(f"{path}: expected a JSON array of objects")
        return [Row(f"{name}#{i}", trim(r), str(path)) for i, r in enumerate(records)]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: invalid JSON line: {e}") from e
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(rec).__name__}")
        rows.append(Row(f"{name}#{len(rows)}", trim(rec), str(path)))
    return rows


def _load_hub(
    spec: str, flag: str, default_split: str, columns: Optional[Sequence[str]] = None
) -> Tuple[List[Row], List[str]]:
    m = _HUB_RE.match(spec)
    if not m:
        raise DataError(f"{flag} {spec!r}: expected hf:REPO[:CONFIG[,CONFIG...]][@SPLIT]")
    repo, split = m.group("repo"), m.group("split") or default_split
    configs = [c for c in (m.group("configs") or "").split(",") if c] or [None]
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{flag} {spec}: the `datasets` package is needed for hub sources") from e
    rows: List[Row] = []
    origins = []
    for config in configs:
        label = f"{repo}{':' + config if config else ''}@{split}"
        try:
            ds = datasets.load_dataset(repo, config, split=split)
        except Exception as e:
            raise DataError(
                f"{flag} {spec}: could not load {label} with datasets.load_dataset ({type(e).__name__}: {e}). "
                f"Without hub access, download the files elsewhere and pass a local .jsonl/.parquet path to {flag}."
            ) from e
        if columns:
            ds = ds.select_columns([c for c in ds.column_names if c in set(columns)])
        short = label.split("/")[-1]
        rows.extend(Row(f"{short}#{i}", dict(r), label) for i, r in enumerate(ds))
        origins.append(label)
    return rows, origins


def _require_columns(rows: Sequence[Row], flag: str, schema: str, required: Sequence[Sequence[str]]) -> None:
    """Each entry of ``required`` is a group of alternatives; every file must have one of each group."""
    by_origin: Dict[str, set] = {}
    for r in rows:
        by_origin.setdefault(r.origin, set()).update(r.record.keys())
    for origin, cols in by_origin.items():
        for group in required:
            if not any(c in cols for c in group):
                want = " or ".join(repr(c) for c in group)
                raise DataError(
                    f"{flag}: {origin} has no column {want} (needed for the {schema} schema); "
                    f"columns found (of those the schema reads): {sorted(cols)}"
                )
