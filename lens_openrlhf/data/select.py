"""Cleaning a source for the data tool: the Math-Verify gold-answer check (run where its timeouts work, cached),
duplicates (within and across sources), test-set decontamination and seeded sampling, as :func:`select` with a
:class:`SelectSpec`."""

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from lens_openrlhf.data.schemas import SCHEMA_COLUMNS, SCHEMAS, Example, SourceReport, normalize_problem
from lens_openrlhf.data.sources import DataError, load_source

# ------------------------------------------------------------------------------------------ gold check


def _gold_ok(gold: str) -> bool:
    from lens_openrlhf.rewards.verify_worker import gold_is_parseable

    try:
        return gold_is_parseable(gold)
    except ImportError:  # the verifier itself is missing: an error, never a bad row
        raise
    except Exception:
        return False


_NO_VERIFIER = (
    "the gold-answer check needs Math-Verify, which is not installed or cannot be imported ({why}): "
    "pip install math-verify==0.9.0, or pass --no-gold-check to skip it"
)


_GOLD_OK: Dict[str, bool] = {}


def check_golds(golds: Sequence[str], workers: int) -> List[bool]:
    """Whether Math-Verify parses each gold answer, run where Math-Verify's timeouts work: in this
    process when it is the main thread and ``workers <= 1``, else in ``workers`` processes. Cached."""
    import importlib
    import threading

    todo = sorted({g for g in golds if g not in _GOLD_OK})
    if todo:  # else every row would be an "unparseable gold"
        try:
            importlib.import_module("math_verify")
        except Exception as e:  # noqa: BLE001 - missing or broken: either way no check can run
            raise DataError(_NO_VERIFIER.format(why=f"{type(e).__name__}: {e}")) from None
    if todo:
        from concurrent.futures.process import BrokenProcessPool

        try:
            if workers <= 1 and threading.current_thread() is threading.main_thread():
                results = [_gold_ok(g) for g in todo]
            else:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                ctx = multiprocessing.get_context("forkserver")
                chunk = max(1, min(256, len(todo) // (4 * max(1, workers))))
                with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as ex:
                    results = list(ex.map(_gold_ok, todo, chunksize=chunk))
        except (ImportError, BrokenProcessPool) as e:
            raise DataError(_NO_VERIFIER.format(why=f"{type(e).__name__}: {e}")) from None
        _GOLD_OK.update(zip(todo, results))
    return [_GOLD_OK[g] for g in golds]


# ------------------------------------------------------------------------------------------ building


@dataclass
class Loaded:
    """A source read and mapped to examples, before cleaning."""

    name: str
    examples: List[Example]
    report: SourceReport
    flag: str = ""  # the CLI flag that named the source, for error messages


def load_examples(name: str, schema: str, spec: str, flag: str, default_split: str) -> Loaded:
    """Read a source and map it through its schema (``SCHEMAS``); bad rows are recorded in the report."""
    rows, _origins = load_source(spec, flag, default_split, SCHEMA_COLUMNS[schema])
    if not rows:
        raise DataError(f"{flag} {spec}: no rows")
    report = SourceReport(name=name, spec=spec)
    report.rows_read = len(rows)
    examples = SCHEMAS[schema](rows, name, report, flag)
    return Loaded(name, examples, report, flag)


@dataclass(frozen=True)
class SelectSpec:
    """How :func:`select` cleans one source.

    ``test_keys``: normalised test problems to drop (``in_test_set``; None: no decontamination). ``size``:
    how many examples to keep (None: all usable; else a random subset seeded by ``seed``). ``gold_check``:
    drop labels Math-Verify cannot parse (``unparseable_gold``), checked in ``workers`` processes.
    ``dedupe``: drop problems already kept (``duplicate``), also those in the ``seen`` map of earlier sources.
    """

    test_keys: Optional[frozenset] = None
    size: Optional[int] = None
    seed: int = 0
    gold_check: bool = True
    workers: int = 1
    dedupe: bool = True


def select(loaded: Loaded, spec: SelectSpec, seen: Optional[Dict[str, str]] = None) -> List[Example]:
    """Clean one source as ``spec`` says: drop duplicates (also of problems in ``seen``) and test problems,
    then take ``spec.size`` examples whose gold Math-Verify parses. Adds the kept problems to ``seen``."""
    seen = {} if seen is None else seen
    test_keys, size, seed, dedupe = spec.test_keys, spec.size, spec.seed, spec.dedupe
    gold_check, workers = spec.gold_check, spec.workers
    rep = loaded.report
    candidates = []
    local_seen: Dict[str, str] = {}
    for ex in loaded.examples:
        key = normalize_problem(ex.problem)
        if not key:
            rep.drop("missing_problem", ex.id)
            continue
        if test_keys is not None and key in test_keys:
            rep.drop("in_test_set", ex.id)
            continue
        if dedupe and (key in seen or key in local_seen):
            rep.drop("duplicate", ex.id)
            continue
        local_seen[key] = ex.id
        candidates.append((key, ex))
    if size is not None:
        random.Random(seed).shuffle(candidates)
    kept: List[Tuple[str, Example]] = []
    pos = 0
    target = len(candidates) if size is None else size
    while len(kept) < target and pos < len(candidates):
        chunk = candidates[pos : pos + max(1, target - len(kept))]
        pos += len(chunk)
        ok = check_golds([ex.answer for _, ex in chunk], workers) if gold_check else [True] * len(chunk)
        for (key, ex), good in zip(chunk, ok):
            if good:
                kept.append((key, ex))
            else:
                rep.drop("unparseable_gold", ex.id)
    for _, ex in candidates[pos:]:
        rep.drop("not_sampled", ex.id)
    if size is not None and len(kept) < size:
        rep.flag("short_of_size", f"wanted {size}, only {len(kept)} usable")
    for key, ex in kept:
        seen[key] = ex.id
    rep.kept = len(kept)
    return [ex for _, ex in kept]


def _copy_report(rep: SourceReport) -> SourceReport:
    """Reports are per output file: start each from the loading-time report."""
    return SourceReport(
        name=rep.name,
        spec=rep.spec,
        rows_read=rep.rows_read,
        dropped={k: list(v) for k, v in rep.dropped.items()},
        dropped_counts=dict(rep.dropped_counts),
        flagged={k: list(v) for k, v in rep.flagged.items()},
        flagged_counts=dict(rep.flagged_counts),
    )
