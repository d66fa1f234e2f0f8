"""The paper's datasets as OpenRLHF prompt files (jsonl), from the hub or from local jsonl/parquet files.

    python -m lens_openrlhf.data train --mix math-dapo   --format qwen-base      --out data/train_math_dapo.qwen.jsonl
    python -m lens_openrlhf.data train --mix math-numina --format llama-instruct \
        --out data/train_math_numina.llama.jsonl
    python -m lens_openrlhf.data test  --format qwen-base --out data/math_test.qwen.jsonl
    python -m lens_openrlhf.data all   --out-dir data      # both mixes and the test set, in both formats
    python -m lens_openrlhf.data all   --out-dir data --offline-sample 16   # the same files, no network (rehearsals)
    python -m lens_openrlhf.data gym   --tasks basic_arithmetic chain_sum --out-dir data/gym  # levels 1-5

``gym``: procedural tasks from reasoning-gym (offline) with difficulty settings mapped to levels 1-5, a
training file and a held-out test file sharing no question: see :mod:`lens_openrlhf.data.gym`.

Sets (arXiv 2510.08696, section 6 and appendix D):

- ``math-dapo``: the MATH training split (7.5k) + a seeded random 17.5k of DAPO-Math-17k (``--dapo-size``).
- ``math-numina``: the MATH training split + NuminaMath-1.5 (its rows with a checkable answer; all of them
  unless ``--numina-size`` asks for a seeded random subset: the paper does not say how many it used).
- ``test``: the MATH test split (5,000 problems) with ``level`` (1-5) and ``subject``.

Every output row has the keys OpenRLHF reads (``--data.input_key prompt --data.label_key label``) plus
``problem`` (raw text), ``level`` (int 1-5 or null), ``subject``, ``source``, ``id`` and ``datasource``
(``<source>_level<L>``: OpenRLHF groups eval metrics by it, and the training-time eval reads the level from it).

Prompt formats (``--format``):

- ``qwen-base`` (Qwen2.5 base, no chat template): ``prompt`` is a plain string, ``QWEN_BASE_TEMPLATE``.
  Train with OpenRLHF WITHOUT ``--data.apply_chat_template``.
- ``llama-instruct`` (Llama-3.1 instruct): ``prompt`` is a chat message list ``[{"role": "user",
  "content": problem + instruction}]``; train WITH ``--data.apply_chat_template`` (OpenRLHF then calls
  the tokenizer's ``apply_chat_template(messages, add_generation_prompt=True)``).

Sources (``--math-train``, ``--math-test``, ``--dapo``, ``--numina``) are either a local path (a ``.jsonl``,
``.json`` or ``.parquet`` file, or a directory of them) or a hub dataset ``hf:REPO[:CONFIG[,CONFIG...]][@SPLIT]``
loaded with ``datasets.load_dataset`` (:mod:`lens_openrlhf.data.sources`); the schemas read, the cleaning
categories counted in the summary and in ``<out>.report.json`` (with row ids), and how problems are matched
are in :mod:`lens_openrlhf.data.schemas`; duplicates, test-set decontamination, sampling and the gold check
in :mod:`lens_openrlhf.data.select`.

Errors (exit 2, one line naming the flag or file): a source every row of which is dropped (the report is
still written beside ``--out``; ``--dapo-size 0`` / ``--numina-size 0`` ask for none), an output path that
cannot be written (checked before any work), the gold check without an importable Math-Verify.

Problems are matched after ``normalize_problem``: NFKC, lower case, ``\\dfrac``/``\\tfrac`` -> ``\\frac``,
``\\left``/``\\right`` dropped, then only letters and digits kept.
"""

import argparse
import json
import os
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence

# the parts of the tool, re-exported here (callers and tests use lens_openrlhf.data.<name>)
from lens_openrlhf.data.schemas import (
    FORMATS,
    Example,
    SourceReport,
    normalize_problem,
)
from lens_openrlhf.data.select import (
    Loaded,
    SelectSpec,
    _copy_report,
    load_examples,
    select,
)
from lens_openrlhf.data.sources import DataError
from lens_openrlhf.recipes import MIXES, test_file, train_file


DEFAULT_MATH_TRAIN = "hf:DigitalLearningGmbH/MATH-lighteval@train"
DEFAULT_MATH_TEST = "hf:DigitalLearningGmbH/MATH-lighteval@test"
DEFAULT_DAPO = "hf:BytedTsinghua-SIA/DAPO-Math-17k@train"
DEFAULT_NUMINA = "hf:AI-MO/NuminaMath-1.5@train"


# ------------------------------------------------------------------------------------------ writing


def _cannot_write(path: Path, e: OSError) -> DataError:
    return DataError(f"cannot write {path} ({e.strerror or e}); give --out / --out-dir a writable path")


def check_writable(path: Path, flag: str, is_dir: bool = False) -> None:
    """Fail before any work when ``path`` (a file, or with ``is_dir`` a folder) cannot be written."""
    import tempfile

    folder = path if is_dir else path.parent
    try:
        if not is_dir and path.is_dir():
            raise DataError(f"{flag} {path}: is a directory; give the output .jsonl file")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lens_data_write_check_"):
            pass
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot write there ({e.strerror or e}); choose a writable path") from None


def write_jsonl(path: Path, examples: Sequence[Example], fmt: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            for ex in examples:
                f.write(json.dumps(ex.to_row(fmt), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise _cannot_write(path, e) from None


def write_report(out: Path, report: dict) -> Path:
    path = out.with_name(out.name + ".report.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as e:
        raise _cannot_write(path, e) from None
    return path


def _require_rows(loaded: "Loaded", kept: int, out: Path, report_path: Path) -> None:
    """A source that loses every row is an error (nothing is written to ``out``), not an exit 0."""
    if kept:
        return
    rep = loaded.report
    why = ", ".join(f"{k} {v}" for k, v in sorted(rep.dropped_counts.items(), key=lambda kv: -kv[1])) or "none usable"
    raise DataError(
        f"{loaded.flag or loaded.name} {rep.spec}: every one of its {rep.rows_read} rows was dropped ({why}); "
        f"{out} not written, see {report_path}"
    )


def _print_summary(title: str, out: Path, n: int, reports: Iterable[SourceReport], report_path: Path) -> None:
    print(f"{title}: wrote {n} rows to {out}")
    for rep in reports:
        for line in rep.summary_lines():
            print(line)
    print(f"  report: {report_path}")


def build_test(test: Loaded, fmt: str, out: Path, gold_check: bool = True, workers: int = 1) -> dict:
    """Write the MATH test set in format ``fmt``; returns the report (also written beside ``out``)."""
    test = Loaded(test.name, list(test.examples), _copy_report(test.report), test.flag)
    # duplicates are dropped and counted: a problem listed twice would weigh twice in pass@k
    examples = select(test, SelectSpec(gold_check=gold_check, workers=workers))
    levels: Dict[str, int] = {}
    for ex in examples:
        k = str(ex.level) if ex.level is not None else "unknown"
        levels[k] = levels.get(k, 0) + 1
    report = {
        "kind": "test",
        "output": str(out),
        "format": fmt,
        "rows_written": len(examples),
        "by_level": dict(sorted(levels.items())),
        "sources": {test.name: test.report.to_json()},
    }
    report_path = write_report(out, report)
    _require_rows(test, len(examples), out, report_path)
    write_jsonl(out, examples, fmt)
    _print_summary(f"MATH test ({fmt})", out, len(examples), [test.report], report_path)
    return report


def build_train(
    mix: str,
    fmt: str,
    out: Path,
    math_train: Loaded,
    extra: Loaded,
    test: Loaded,
    extra_size: Optional[int],
    seed: int = 0,
    gold_check: bool = True,
    workers: int = 1,
) -> dict:
    """Write a training mix: MATH train + (DAPO or Numina), decontaminated against ``test``."""
    if mix not in MIXES:
        raise ValueError(f"--mix must be one of {MIXES}, got {mix!r}")
    test_keys = frozenset({normalize_problem(ex.problem) for ex in test.examples} - {""})
    math_train = Loaded(math_train.name, list(math_train.examples), _copy_report(math_train.report), math_train.flag)
    extra = Loaded(extra.name, list(extra.examples), _copy_report(extra.report), extra.flag)
    seen: Dict[str, str] = {}
    spec = SelectSpec(test_keys=test_keys, seed=seed, gold_check=gold_check, workers=workers)
    kept_math = select(math_train, spec, seen)
    kept_extra = select(extra, replace(spec, size=extra_size), seen)
    examples = kept_math + kept_extra
    random.Random(seed).shuffle(examples)
    report = {
        "kind": "train",
        "mix": mix,
        "output": str(out),
        "format": fmt,
        "seed": seed,
        "rows_written": len(examples),
        "by_source": {math_train.name: len(kept_math), extra.name: len(kept_extra)},
        "requested_size": {extra.name: extra_size},
        "test_set_problems": len(test_keys),
        "gold_check": gold_check,
        "sources": {math_train.name: math_train.report.to_json(), extra.name: extra.report.to_json()},
    }
    report_path = write_report(out, report)
    _require_rows(math_train, len(kept_math), out, report_path)
    if extra_size != 0:  # --dapo-size 0 / --numina-size 0 ask for none
        _require_rows(extra, len(kept_extra), out, report_path)
    write_jsonl(out, examples, fmt)
    _print_summary(f"{mix} ({fmt})", out, len(examples), [math_train.report, extra.report], report_path)
    return report


# ------------------------------------------------------------------------------------------ CLI


def _add_common(p: argparse.ArgumentParser, train: bool) -> None:
    p.add_argument("--math-test", default=DEFAULT_MATH_TEST, help=f"MATH test source (default {DEFAULT_MATH_TEST})")
    if train:
        p.add_argument(
            "--math-train", default=DEFAULT_MATH_TRAIN, help=f"MATH train source (default {DEFAULT_MATH_TRAIN})"
        )
        p.add_argument("--dapo", default=DEFAULT_DAPO, help=f"DAPO-Math-17k source (default {DEFAULT_DAPO})")
        p.add_argument("--numina", default=DEFAULT_NUMINA, help=f"NuminaMath-1.5 source (default {DEFAULT_NUMINA})")
        p.add_argument("--dapo-size", type=int, default=17500, help="DAPO problems to sample (default 17500)")
        p.add_argument("--numina-size", type=int, default=None, help="Numina problems to sample (default: all usable)")
        p.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed (default 0)")
    p.add_argument(
        "--no-gold-check", dest="gold_check", action="store_false", help="skip the Math-Verify parse of every label"
    )
    p.add_argument(
        "--offline-sample",
        type=int,
        default=None,
        metavar="N",
        help="no network: build from N generated arithmetic problems per source, written in each source's own schema "
        "beside the output (lens_openrlhf.data.offline; for rehearsals and CI, not the paper's data)",
    )
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes for the gold check")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m lens_openrlhf.data",
        description="Build the LENS paper's training mixes and MATH test set as OpenRLHF jsonl.",
        epilog="Sources: a local .jsonl/.json/.parquet file or directory, or hf:REPO[:CONFIG[,CONFIG]][@SPLIT].",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="one training mix in one prompt format")
    t.add_argument("--mix", choices=MIXES, required=True)
    t.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
    t.add_argument("--out", required=True, type=Path, help="output .jsonl (the report goes to <out>.report.json)")
    _add_common(t, train=True)
    e = sub.add_parser("test", help="the MATH test set in one prompt format")
    e.add_argument("--format", choices=FORMATS, required=True, dest="fmt")
    e.add_argument("--out", required=True, type=Path)
    _add_common(e, train=False)
    a = sub.add_parser("all", help="both mixes and the test set, in both formats, into --out-dir")
    a.add_argument("--out-dir", required=True, type=Path)
    a.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    a.add_argument("--mixes", nargs="+", choices=MIXES, default=list(MIXES))
    _add_common(a, train=True)
    from lens_openrlhf.data.gym import TASKS

    g = sub.add_parser(
        "gym", help="reasoning-gym tasks at levels 1-5: train.jsonl, test.jsonl, report.json into --out-dir"
    )
    g.add_argument("--out-dir", required=True, type=Path)
    g.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"reasoning-gym tasks (default: {' '.join(TASKS)})")
    g.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    g.add_argument(
        "--train-per-level", type=int, default=200, help="training problems per task and level (default 200)"
    )
    g.add_argument("--test-per-level", type=int, default=20, help="held-out problems per task and level (default 20)")
    g.add_argument(
        "--warmup-per-level",
        type=int,
        default=0,
        help="also write warmup.jsonl: problems per task and level for a supervised warm-up (default 0: none)",
    )
    g.add_argument("--warmup-levels", nargs="+", type=int, default=[1, 2, 3])
    g.add_argument("--seed", type=int, default=0)
    return ap


def _check_sizes(args) -> None:
    for flag, val in (
        ("--dapo-size", getattr(args, "dapo_size", None)),
        ("--numina-size", getattr(args, "numina_size", None)),
    ):
        if val is not None and val < 0:
            raise DataError(f"{flag} must be >= 0, got {val}")
    if args.workers < 1:
        raise DataError(f"--workers must be >= 1, got {args.workers}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "gym":
        from lens_openrlhf.data import gym as gym_data

        try:
            rep = gym_data.write(
                args.out_dir,
                tasks=args.tasks,
                levels=args.levels,
                train_per_level=args.train_per_level,
                test_per_level=args.test_per_level,
                seed=args.seed,
                warmup_per_level=args.warmup_per_level,
                warmup_levels=args.warmup_levels,
            )
        except gym_data.GymDataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(
            f"reasoning-gym: {rep['train']['rows']} train rows -> {rep['train']['path']}, "
            f"{rep['test']['rows']} held-out rows -> {rep['test']['path']} "
            f"(shared questions: {rep['train_test_overlap']})"
        )
        for name in ("train", "test", "warmup"):
            if rep[name]["rows"]:
                print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in rep[name]["by_datasource"].items()))
        return 0
    try:
        _check_sizes(args)
        if args.cmd == "all":
            check_writable(args.out_dir, "--out-dir", is_dir=True)
        else:
            check_writable(args.out, "--out")
        if args.offline_sample is not None:
            from lens_openrlhf.data import offline

            if args.offline_sample < 1:
                raise DataError(f"--offline-sample must be >= 1, got {args.offline_sample}")
            folder = (args.out_dir if args.cmd == "all" else args.out.parent) / "offline_sources"
            for dest, path in offline.write_sources(folder, args.offline_sample, getattr(args, "seed", 0)).items():
                if hasattr(args, dest):
                    setattr(args, dest, path)
            print(f"offline sample: {args.offline_sample} generated problems per source in {folder}")
        test = load_examples("math_test", "math", args.math_test, "--math-test", "test")
        if args.cmd == "test":
            build_test(test, args.fmt, args.out, args.gold_check, args.workers)
            return 0
        math_train = load_examples("math_train", "math", args.math_train, "--math-train", "train")
        mixes = [args.mix] if args.cmd == "train" else args.mixes
        formats = [args.fmt] if args.cmd == "train" else args.formats
        extras = {}
        if "math-dapo" in mixes:
            extras["math-dapo"] = (load_examples("dapo", "dapo", args.dapo, "--dapo", "train"), args.dapo_size)
        if "math-numina" in mixes:
            extras["math-numina"] = (
                load_examples("numina", "numina", args.numina, "--numina", "train"),
                args.numina_size,
            )
        for fmt in formats:
            for mix in mixes:
                extra, size = extras[mix]
                out = args.out if args.cmd == "train" else Path(train_file(args.out_dir, mix, fmt))
                build_train(mix, fmt, out, math_train, extra, test, size, args.seed, args.gold_check, args.workers)
            if args.cmd == "all":
                build_test(test, fmt, Path(test_file(args.out_dir, fmt)), args.gold_check, args.workers)
        return 0
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
