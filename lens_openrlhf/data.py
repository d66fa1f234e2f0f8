"""The paper's datasets as OpenRLHF prompt files (jsonl), from the hub or from local jsonl/parquet files.

    python -m lens_openrlhf.data train --mix math-dapo   --format qwen-base      --out data/train_math_dapo.qwen.jsonl
    python -m lens_openrlhf.data train --mix math-numina --format llama-instruct --out data/train_math_numina.llama.jsonl
    python -m lens_openrlhf.data test  --format qwen-base --out data/math_test.qwen.jsonl
    python -m lens_openrlhf.data all   --out-dir data      # both mixes and the test set, in both formats
    python -m lens_openrlhf.data gym   --tasks basic_arithmetic chain_sum --out-dir data/gym   # reasoning-gym tasks, levels 1-5

``gym``: procedural tasks from reasoning-gym (offline) with difficulty settings mapped to levels 1-5, a
training file and a held-out test file sharing no question: see :mod:`lens_openrlhf.gym_data`.

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
loaded with ``datasets.load_dataset``. Schemas read:

- Hendrycks MATH: ``problem``, ``solution`` (the answer is its last ``\\boxed{}``), ``level`` ("Level 1".."Level 5"),
  ``type`` (the subject). MATH-500-style files may carry ``answer`` (used when present), ``subject``, an integer
  ``level`` and ``unique_id``.
- DAPO-Math-17k: ``prompt`` (a list of chat messages; the problem is wrapped in DAPO's "Solve the following
  math problem step by step..." instruction line and "Remember to put your answer..." reminder, both
  removed whatever whitespace separates them from the problem), ``reward_model: {ground_truth}``,
  ``extra_info: {index}``. The hub file repeats each problem many times: duplicates are removed first.
- NuminaMath-1.5: ``problem``, ``answer``, ``solution``, ``problem_type``, ``question_type``, ``source``,
  ``problem_is_valid``, ``solution_is_valid``, ``synthetic``. Proofs and rows without a checkable answer
  ("proof", "notfound", empty) are left out; so are rows flagged invalid ("No") when the flags exist.

Cleaning, all of it counted in the summary and in ``<out>.report.json`` with row ids:

- bad rows, dropped: ``missing_problem``, ``no_answer``, ``unparseable_gold`` (Math-Verify extracts no
  expression from ``"$" + answer + "$"``; ``--no-gold-check`` skips this test), ``wrong_type_<field>`` (a
  list, dict or bool where text or a number is read: never its ``str()``), ``unparsed_prompt`` (a DAPO prompt
  that starts with DAPO's instruction but cannot be split from the problem);
- ``duplicate`` (same normalised problem seen before, within or across sources; also within the test set,
  where a repeated problem would weigh twice in pass@k) and ``in_test_set`` (the normalised problem is a
  MATH test problem: training sets are decontaminated against ``--math-test``);
- ``proof`` / ``invalid_flag`` (Numina), ``not_sampled`` (beyond ``--dapo-size`` / ``--numina-size``);
- kept but flagged: ``unknown_level`` (e.g. MATH's "Level ?").

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
import re
import sys
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_BASE_TEMPLATE = "Question: {problem}\n" + BOXED_INSTRUCTION + "\nAnswer:"
LLAMA_INSTRUCT_TEMPLATE = "{problem}\n\n" + BOXED_INSTRUCTION
# templates are filled with str.replace("{problem}", ...): the instruction's "\boxed{}" is literal
FORMATS = ("qwen-base", "llama-instruct")
MIXES = ("math-dapo", "math-numina")

DEFAULT_MATH_TRAIN = "hf:DigitalLearningGmbH/MATH-lighteval@train"
DEFAULT_MATH_TEST = "hf:DigitalLearningGmbH/MATH-lighteval@test"
DEFAULT_DAPO = "hf:BytedTsinghua-SIA/DAPO-Math-17k@train"
DEFAULT_NUMINA = "hf:AI-MO/NuminaMath-1.5@train"

DAPO_PREFIX = "Solve the following math problem step by step."
# DAPO-Math-17k's whole instruction line, and the reminder that follows the problem
DAPO_INSTRUCTION = (
    DAPO_PREFIX + " The last line of your response should be of the form Answer: $Answer (without quotes) where "
    "$Answer is the answer to the problem."
)
DAPO_SUFFIX = "Remember to put your answer on its own line after"
NUMINA_NO_ANSWER = {"", "proof", "notfound", "none", "n/a"}

# categories whose ids are all listed in the report; others list the first REPORT_ID_CAP ids
BAD_ROW_CATEGORIES = ("missing_problem", "no_answer", "unparseable_gold", "unparsed_prompt")
# a field holding a list, dict or bool where text is read is dropped as "wrong_type_<field>" (a bad-row category)
WRONG_TYPE = "wrong_type_"
REPORT_ID_CAP = 1000


class DataError(ValueError):
    """A source that cannot be read as the schema it is given for (names the flag/file and column)."""


# ------------------------------------------------------------------------------------------ basics


def format_prompt(problem: str, fmt: str):
    """The ``prompt`` field for ``problem`` in format ``fmt`` (see ``FORMATS``)."""
    if fmt == "qwen-base":
        return QWEN_BASE_TEMPLATE.replace("{problem}", problem)
    if fmt == "llama-instruct":
        return [{"role": "user", "content": LLAMA_INSTRUCT_TEMPLATE.replace("{problem}", problem)}]
    raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")


_NORM_DROP = re.compile(r"\\(?:left|right)(?![a-z])")
_NORM_KEEP = re.compile(r"[^0-9a-z]+")


def normalize_problem(text: str) -> str:
    """The key used to match problems across sources (duplicates, test-set decontamination)."""
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    t = _NORM_DROP.sub("", t)
    return _NORM_KEEP.sub("", t)


def parse_level(value) -> Optional[int]:
    """``"Level 3"`` / ``3`` / ``"3"`` -> 3; anything else (``"Level ?"``, None) -> None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() and 1 <= int(value) <= 5 else None
    m = re.fullmatch(r"\s*(?:level\s*)?([1-5])\s*", str(value), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return ""
    return str(value).strip()


class WrongType(Exception):
    """A record field that should hold text (or a number) holds something else: the row is dropped as
    ``wrong_type_<field>`` rather than its ``str()`` (e.g. the box inside a list-valued solution) being used."""

    def __init__(self, field: str, value):
        super().__init__(f"{field}: {type(value).__name__}")
        self.field = field


def _field(rec: dict, key: str) -> str:
    """``rec[key]`` as stripped text: strings and numbers (not bools); missing / None / NaN -> ""; any other
    type raises :class:`WrongType`."""
    value = rec.get(key)
    if value is None or isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return _text(value)
    raise WrongType(key, value)


@dataclass
class Example:
    """One problem, source-independent."""

    id: str
    problem: str
    answer: str
    source: str
    level: Optional[int] = None
    subject: Optional[str] = None

    def to_row(self, fmt: str) -> dict:
        return {
            "prompt": format_prompt(self.problem, fmt),
            "label": self.answer,
            "problem": self.problem,
            "level": self.level,
            "subject": self.subject,
            "source": self.source,
            "id": self.id,
            # OpenRLHF groups eval metrics by `datasource`; lens_openrlhf's training-time eval reads the level
            # from it for per-level and Levels 4-5 pass@k (openrlhf_adapter.unbiased_eval_logs)
            "datasource": f"{self.source}_level{self.level}" if self.level is not None else self.source,
        }


@dataclass
class SourceReport:
    """What happened to the rows of one source."""

    name: str
    spec: str
    rows_read: int = 0
    kept: int = 0
    dropped: Dict[str, List[str]] = field(default_factory=dict)
    dropped_counts: Dict[str, int] = field(default_factory=dict)
    flagged: Dict[str, List[str]] = field(default_factory=dict)
    flagged_counts: Dict[str, int] = field(default_factory=dict)

    def drop(self, category: str, row_id: str) -> None:
        self.dropped_counts[category] = self.dropped_counts.get(category, 0) + 1
        ids = self.dropped.setdefault(category, [])
        if category in BAD_ROW_CATEGORIES or category.startswith(WRONG_TYPE) or len(ids) < REPORT_ID_CAP:
            ids.append(row_id)

    def flag(self, category: str, row_id: str) -> None:
        self.flagged_counts[category] = self.flagged_counts.get(category, 0) + 1
        ids = self.flagged.setdefault(category, [])
        if len(ids) < REPORT_ID_CAP:
            ids.append(row_id)

    def to_json(self) -> dict:
        def block(counts, ids):
            return {
                k: {"count": counts[k], "ids": ids[k], "ids_complete": len(ids[k]) == counts[k]}
                for k in sorted(counts)
            }

        return {
            "spec": self.spec,
            "rows_read": self.rows_read,
            "kept": self.kept,
            "dropped": block(self.dropped_counts, self.dropped),
            "flagged": block(self.flagged_counts, self.flagged),
        }

    def summary_lines(self) -> List[str]:
        lines = [f"  {self.name}: {self.rows_read} rows read from {self.spec}, {self.kept} kept"]
        for kind, counts, ids in (("dropped", self.dropped_counts, self.dropped), ("flagged", self.flagged_counts, self.flagged)):
            for k in sorted(counts):
                head = ", ".join(ids[k][:5]) + (", ..." if counts[k] > 5 else "")
                lines.append(f"    {kind} {k}: {counts[k]} ({head})")
        return lines


# ------------------------------------------------------------------------------------------ loading


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
        raise DataError(
            f"{flag} {spec!r}: no such file or directory (write hub datasets as hf:REPO[:CONFIG][@SPLIT])"
        )
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


# ------------------------------------------------------------------------------------------ schemas


def math_examples(rows: Sequence[Row], source: str, report: SourceReport, flag: str) -> List[Example]:
    """Hendrycks MATH (or MATH-500-style) rows -> examples; bad rows go to ``report``."""
    from lens_openrlhf.rewards.answers import extract_last_boxed, normalize_label

    _require_columns(rows, flag, "Hendrycks MATH", [("problem",), ("solution", "answer"), ("level",)])
    out = []
    for r in rows:
        rec = r.record
        rid = f"{source}/{_text(rec.get('unique_id')) or r.ref}"
        try:
            problem = _field(rec, "problem")
            if not problem:
                report.drop("missing_problem", rid)
                continue
            raw_answer = _field(rec, "answer")
            answer = normalize_label(raw_answer) if raw_answer else None
            if answer is None:
                boxed = extract_last_boxed(_field(rec, "solution"))
                answer = normalize_label(boxed) if boxed else None
            if answer is None:
                report.drop("no_answer", rid)
                continue
            subject = _field(rec, "type") or _field(rec, "subject") or None
        except WrongType as e:
            report.drop(WRONG_TYPE + e.field, rid)
            continue
        level = parse_level(rec.get("level"))
        if level is None:
            report.flag("unknown_level", rid)
        out.append(Example(rid, problem, answer, source, level, subject))
    return out


def _dapo_problem(prompt) -> Optional[str]:
    """The problem inside a DAPO prompt ("" when there is none), or None when the prompt starts with DAPO's
    instruction but the problem cannot be told apart from it (the row is then dropped as ``unparsed_prompt``)."""
    if isinstance(prompt, str) and prompt.lstrip().startswith("["):
        try:
            prompt = json.loads(prompt)
        except json.JSONDecodeError:
            pass
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        msgs = users or [m for m in prompt if isinstance(m, dict)]
        value = msgs[0].get("content") if msgs else None
        if not (value is None or isinstance(value, str)):
            raise WrongType("prompt", value)
        text = _text(value)
    elif prompt is None or isinstance(prompt, str):
        text = _text(prompt)
    else:
        raise WrongType("prompt", prompt)
    cut = text.find(DAPO_SUFFIX)
    if cut >= 0:
        text = text[:cut]
    if text.startswith(DAPO_INSTRUCTION):  # DAPO's own instruction, whatever separates it from the problem
        text = text[len(DAPO_INSTRUCTION) :]
    elif text.startswith(DAPO_PREFIX):  # another instruction: its paragraph, else its line, else refuse
        _, sep, body = text.partition("\n\n")
        if not (sep and body.strip()):
            _, sep, body = text.partition("\n")
        if not (sep and body.strip()):
            return None
        text = body
    return text.strip()


def dapo_examples(rows: Sequence[Row], source: str, report: SourceReport, flag: str) -> List[Example]:
    """DAPO-Math-17k rows -> examples (the problem unwrapped from DAPO's instruction)."""
    from lens_openrlhf.rewards.answers import normalize_label

    _require_columns(rows, flag, "DAPO-Math-17k", [("prompt",), ("reward_model", "answer", "solution")])
    out = []
    for r in rows:
        rec = r.record
        extra = rec.get("extra_info")
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError:
                extra = None
        native = _text(extra.get("index")) if isinstance(extra, dict) else ""
        rid = f"{source}/{native or r.ref}"
        try:
            problem = _dapo_problem(rec.get("prompt"))
            if problem is None:
                report.drop("unparsed_prompt", rid)
                continue
            if not problem:
                report.drop("missing_problem", rid)
                continue
            rm = rec.get("reward_model")
            if isinstance(rm, str):
                try:
                    rm = json.loads(rm)
                except json.JSONDecodeError:
                    rm = {"ground_truth": rm}
            if not (rm is None or isinstance(rm, dict)):
                raise WrongType("reward_model", rm)
            gold = _field(rm, "ground_truth") if rm is not None else ""
            if not gold:
                gold = _field(rec, "answer") or _field(rec, "solution")
        except WrongType as e:
            report.drop(WRONG_TYPE + e.field, rid)
            continue
        answer = normalize_label(gold) if gold else None
        if answer is None:
            report.drop("no_answer", rid)
            continue
        out.append(Example(rid, problem, answer, source, None, None))
    return out


def numina_examples(rows: Sequence[Row], source: str, report: SourceReport, flag: str) -> List[Example]:
    """NuminaMath-1.5 rows -> examples with a checkable answer."""
    from lens_openrlhf.rewards.answers import normalize_label

    _require_columns(rows, flag, "NuminaMath-1.5", [("problem",), ("answer",)])
    out = []
    for r in rows:
        rec = r.record
        rid = f"{source}/{r.ref}"
        try:
            problem = _field(rec, "problem")
            if not problem:
                report.drop("missing_problem", rid)
                continue
            raw_answer = _field(rec, "answer")
            if _field(rec, "question_type").lower() == "proof" or raw_answer.lower() == "proof":
                report.drop("proof", rid)
                continue
            if any(k in rec and _text(rec.get(k)).lower() not in ("yes", "true", "") for k in ("problem_is_valid", "solution_is_valid")):
                report.drop("invalid_flag", rid)
                continue
            answer = None if raw_answer.lower() in NUMINA_NO_ANSWER else normalize_label(raw_answer)
            if answer is None:
                report.drop("no_answer", rid)
                continue
            subject = _field(rec, "problem_type") or None
        except WrongType as e:
            report.drop(WRONG_TYPE + e.field, rid)
            continue
        out.append(Example(rid, problem, answer, source, None, subject))
    return out


SCHEMAS: Dict[str, Callable] = {"math": math_examples, "dapo": dapo_examples, "numina": numina_examples}
# the columns each schema reads (the rest is not loaded)
SCHEMA_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "math": ("problem", "solution", "answer", "level", "type", "subject", "unique_id"),
    "dapo": ("prompt", "reward_model", "answer", "solution", "extra_info"),
    "numina": ("problem", "answer", "problem_type", "question_type", "problem_is_valid", "solution_is_valid"),
}


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


# ------------------------------------------------------------------------------------------ CLI


def _add_common(p: argparse.ArgumentParser, train: bool) -> None:
    p.add_argument("--math-test", default=DEFAULT_MATH_TEST, help=f"MATH test source (default {DEFAULT_MATH_TEST})")
    if train:
        p.add_argument("--math-train", default=DEFAULT_MATH_TRAIN, help=f"MATH train source (default {DEFAULT_MATH_TRAIN})")
        p.add_argument("--dapo", default=DEFAULT_DAPO, help=f"DAPO-Math-17k source (default {DEFAULT_DAPO})")
        p.add_argument("--numina", default=DEFAULT_NUMINA, help=f"NuminaMath-1.5 source (default {DEFAULT_NUMINA})")
        p.add_argument("--dapo-size", type=int, default=17500, help="DAPO problems to sample (default 17500)")
        p.add_argument("--numina-size", type=int, default=None, help="Numina problems to sample (default: all usable)")
        p.add_argument("--seed", type=int, default=0, help="sampling and shuffling seed (default 0)")
    p.add_argument("--no-gold-check", dest="gold_check", action="store_false", help="skip the Math-Verify parse of every label")
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
    from lens_openrlhf.gym_data import TASKS

    g = sub.add_parser("gym", help="reasoning-gym tasks at levels 1-5: train.jsonl, test.jsonl, report.json into --out-dir")
    g.add_argument("--out-dir", required=True, type=Path)
    g.add_argument("--tasks", nargs="+", default=list(TASKS), help=f"reasoning-gym tasks (default: {' '.join(TASKS)})")
    g.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    g.add_argument("--train-per-level", type=int, default=200, help="training problems per task and level (default 200)")
    g.add_argument("--test-per-level", type=int, default=20, help="held-out problems per task and level (default 20)")
    g.add_argument("--warmup-per-level", type=int, default=0,
                   help="also write warmup.jsonl: problems per task and level for a supervised warm-up (default 0: none)")
    g.add_argument("--warmup-levels", nargs="+", type=int, default=[1, 2, 3])
    g.add_argument("--seed", type=int, default=0)
    return ap


def _check_sizes(args) -> None:
    for flag, val in (("--dapo-size", getattr(args, "dapo_size", None)), ("--numina-size", getattr(args, "numina_size", None))):
        if val is not None and val < 0:
            raise DataError(f"{flag} must be >= 0, got {val}")
    if args.workers < 1:
        raise DataError(f"--workers must be >= 1, got {args.workers}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "gym":
        from lens_openrlhf import gym_data

        try:
            rep = gym_data.write(
                args.out_dir, tasks=args.tasks, levels=args.levels, train_per_level=args.train_per_level,
                test_per_level=args.test_per_level, seed=args.seed, warmup_per_level=args.warmup_per_level,
                warmup_levels=args.warmup_levels,
            )
        except gym_data.GymDataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"reasoning-gym: {rep['train']['rows']} train rows -> {rep['train']['path']}, "
              f"{rep['test']['rows']} held-out rows -> {rep['test']['path']} (shared questions: {rep['train_test_overlap']})")
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
            extras["math-numina"] = (load_examples("numina", "numina", args.numina, "--numina", "train"), args.numina_size)
        for fmt in formats:
            short = "qwen" if fmt == "qwen-base" else "llama"
            for mix in mixes:
                extra, size = extras[mix]
                out = args.out if args.cmd == "train" else args.out_dir / f"train_{mix.replace('-', '_')}.{short}.jsonl"
                build_train(mix, fmt, out, math_train, extra, test, size, args.seed, args.gold_check, args.workers)
            if args.cmd == "all":
                build_test(test, fmt, args.out_dir / f"math_test.{short}.jsonl", args.gold_check, args.workers)
        return 0
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
