"""The source schemas of the data tool, mapped to one source-independent :class:`Example` per problem, and the
per-source :class:`SourceReport` of what was dropped or flagged, and why. Prompt formats (``FORMATS``).

Schemas read:

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
"""

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from lens_openrlhf.data.sources import Row, _require_columns

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_BASE_TEMPLATE = "Question: {problem}\n" + BOXED_INSTRUCTION + "\nAnswer:"
LLAMA_INSTRUCT_TEMPLATE = "{problem}\n\n" + BOXED_INSTRUCTION
# templates are filled with str.replace("{problem}", ...): the instruction's "\boxed{}" is literal
FORMATS = ("qwen-base", "llama-instruct")

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
            # from it for per-level and Levels 4-5 pass@k (coupling.eval_metrics.unbiased_eval_logs)
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
                k: {"count": counts[k], "ids": ids[k], "ids_complete": len(ids[k]) == counts[k]} for k in sorted(counts)
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
        for kind, counts, ids in (
            ("dropped", self.dropped_counts, self.dropped),
            ("flagged", self.flagged_counts, self.flagged),
        ):
            for k in sorted(counts):
                head = ", ".join(ids[k][:5]) + (", ..." if counts[k] > 5 else "")
                lines.append(f"    {kind} {k}: {counts[k]} ({head})")
        return lines


# ------------------------------------------------------------------------------------------ schemas


def _problem_and_answer(rec: dict, report: SourceReport, rid: str) -> Optional[Tuple[str, str]]:
    """A row's ``problem`` and raw ``answer`` text; None (the row dropped as ``missing_problem``) without a problem."""
    problem = _field(rec, "problem")
    if not problem:
        report.drop("missing_problem", rid)
        return None
    return problem, _field(rec, "answer")


def math_examples(rows: Sequence[Row], source: str, report: SourceReport, flag: str) -> List[Example]:
    """Hendrycks MATH (or MATH-500-style) rows -> examples; bad rows go to ``report``."""
    from lens_openrlhf.rewards.answers import extract_last_boxed, normalize_label

    _require_columns(rows, flag, "Hendrycks MATH", [("problem",), ("solution", "answer"), ("level",)])
    out = []
    for r in rows:
        rec = r.record
        rid = f"{source}/{_text(rec.get('unique_id')) or r.ref}"
        try:
            got = _problem_and_answer(rec, report, rid)
            if got is None:
                continue
            problem, raw_answer = got
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
            got = _problem_and_answer(rec, report, rid)
            if got is None:
                continue
            problem, raw_answer = got
            if _field(rec, "question_type").lower() == "proof" or raw_answer.lower() == "proof":
                report.drop("proof", rid)
                continue
            if any(
                k in rec and _text(rec.get(k)).lower() not in ("yes", "true", "")
                for k in ("problem_is_valid", "solution_is_valid")
            ):
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
