"""Unbiased pass@k and the evaluation report: pure Python, no vLLM, no torch (a test checks the imports).

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
``pass@k = 1 - C(n-c, k) / C(n, k)``, averaged over problems, reported overall, per MATH level and for
Levels 4-5. Used by ``python -m lens_openrlhf.evaluation`` (which samples with vLLM), by the training-time eval
(``coupling.eval_metrics.unbiased_eval_logs``) and by the warm start. Writes and reads the per-problem results
(``results.<name>.jsonl``), ``report.json`` and the ``pass_at_k.png`` curves (matplotlib, imported when
plotting).
"""

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

KS = (1, 2, 4, 8, 16)


class UsageError(ValueError):
    """A bad flag or input file (the message names it); the CLI prints it and exits with status 2."""


# ------------------------------------------------------------------------------------------ pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``1 - C(n-c, k) / C(n, k)``, exact (integer arithmetic).

    Args:
        n: samples drawn (>= 1); c: correct samples (0 <= c <= n); k: budget (1 <= k <= n).
    Raises:
        ValueError / TypeError on arguments outside those ranges or not integers.
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"pass_at_k: {name} must be an integer, got {v!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


@dataclass
class ProblemResult:
    """One problem's outcome: ``n`` samples, ``c`` of them correct, ``boxed`` with a non-empty ``\\boxed{}``."""

    id: str
    n: int
    c: int
    level: Optional[int] = None
    subject: Optional[str] = None
    reasons: Dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    responses: Optional[List[str]] = None
    boxed: Optional[int] = None
    datasource: Optional[str] = None


def _as_result(r) -> ProblemResult:
    if isinstance(r, ProblemResult):
        return r
    if isinstance(r, Mapping):
        return ProblemResult(
            id=str(r.get("id", "")), n=r["n"], c=r["c"], level=r.get("level"), subject=r.get("subject")
        )
    n, c, level = r  # (n, c, level)
    return ProblemResult(id="", n=n, c=c, level=level)


def summarize(results: Sequence[ProblemResult], ks: Sequence[int]) -> Dict[str, Any]:
    """Mean pass@k over ``results`` for each k in ``ks`` (all k must be <= every problem's n)."""
    out: Dict[str, Any] = {"num_problems": len(results)}
    if not results:
        return out
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(r.n, r.c, k) for r in results) / len(results)
    out["mean_accuracy"] = sum(r.c / r.n for r in results) / len(results)
    return out


def build_report(results: Iterable, ks: Sequence[int] = KS) -> Dict[str, Any]:
    """pass@k overall, per level and for Levels 4-5, from per-problem results.

    ``results``: ``ProblemResult``s, dicts with ``n``, ``c``, ``level``, or ``(n, c, level)`` tuples.
    Only the k <= min n are reported (every average is then over the same problems). Levels are keys
    "1".."5" ("unknown" for problems without one); ``levels_4_5`` is None when no problem has level 4/5.
    """
    res = [_as_result(r) for r in results]
    if not res:
        raise ValueError("build_report: no problems")
    for r in res:
        pass_at_k(r.n, r.c, 1)  # validates n and c
    n_min = min(r.n for r in res)
    ks_used = [k for k in sorted(set(ks)) if 1 <= k <= n_min]
    if not ks_used:
        raise ValueError(f"build_report: no k in {list(ks)} is <= the smallest n ({n_min})")
    by_level: Dict[str, List[ProblemResult]] = {}
    for r in res:
        key = str(r.level) if r.level is not None else "unknown"
        by_level.setdefault(key, []).append(r)
    hard = [r for r in res if r.level in (4, 5)]
    return {
        "ks": ks_used,
        "n_samples": {"min": n_min, "max": max(r.n for r in res)},
        "overall": summarize(res, ks_used),
        "by_level": {k: summarize(v, ks_used) for k, v in sorted(by_level.items())},
        "levels_4_5": summarize(hard, ks_used) if hard else None,
    }


def level_table(results: Sequence[ProblemResult], ks: Sequence[int] = (1, 8)) -> Dict[str, Dict[str, float]]:
    """``{"all": {"pass@1": .., "boxed": ..}, "levels_4_5": .., "level_1": .., ...}``: mean unbiased pass@k of each
    group of problems (k up to the first problem's n) and, where every result has it, ``boxed``: the share of samples
    with a ``\\boxed{}`` answer. The demo's before/after table and the benchmarks that measure it."""
    groups: Dict[str, List[ProblemResult]] = {
        "all": list(results),
        "levels_4_5": [r for r in results if r.level in (4, 5)],
    }
    for lv in sorted({r.level for r in results if r.level is not None}):
        groups[f"level_{lv}"] = [r for r in results if r.level == lv]
    table = {}
    for g, rs in groups.items():
        if rs:
            table[g] = {f"pass@{k}": sum(pass_at_k(r.n, r.c, k) for r in rs) / len(rs) for k in ks if k <= rs[0].n}
            if all(r.boxed is not None for r in rs):
                table[g]["boxed"] = sum(r.boxed for r in rs) / sum(r.n for r in rs)
    return table


def with_greedy(table: Dict[str, Dict[str, float]], greedy: Sequence[ProblemResult]) -> Dict[str, Dict[str, float]]:
    """``table`` (:func:`level_table` of sampled answers) with ``"greedy"``: each group's pass@1 of one greedy answer
    per problem (``greedy``: the same rows sampled with ``greedy=True``). A sampled pass@1 well below the greedy one
    is a model that knows answers it does not reliably sample."""
    g = level_table(greedy, ks=(1,))
    return {k: {**v, "greedy": g[k]["pass@1"]} if k in g else dict(v) for k, v in table.items()}


def format_report(name: str, report: Dict[str, Any]) -> str:
    """A small text table of a report (percentages)."""
    ks = report["ks"]
    head = f"{name:>14s} {'problems':>8s} " + " ".join(f"{'pass@' + str(k):>8s}" for k in ks)
    lines = [head]

    def row(label, s):
        if not s:
            return
        lines.append(f"{label:>14s} {s['num_problems']:8d} " + " ".join(f"{100 * s[f'pass@{k}']:8.2f}" for k in ks))

    row("all", report["overall"])
    for lvl, s in report["by_level"].items():
        row(f"level {lvl}", s)
    row("levels 4-5", report["levels_4_5"])
    return "\n".join(lines)


def plot_pass_at_k(reports: Mapping[str, Dict[str, Any]], path: Path) -> Path:
    """pass@k curves (percent vs k, log2 axis), one line per checkpoint; panels: all, Levels 4-5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("overall", "MATH test: all problems"), ("levels_4_5", "MATH test: Levels 4-5")]
    if not any(rep.get("levels_4_5") for rep in reports.values()):
        panels = panels[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for name, rep in reports.items():
            s = rep.get(key)
            if not s:
                continue
            ks = rep["ks"]
            ax.plot(ks, [100 * s[f"pass@{k}"] for k in ks], marker="o", label=name)
        ax.set_xscale("log", base=2)
        all_ks = sorted({k for rep in reports.values() for k in rep["ks"]})
        ax.set_xticks(all_ks)
        ax.set_xticklabels([str(k) for k in all_ks])
        n_probs = {rep[key]["num_problems"] for rep in reports.values() if rep.get(key)}
        ax.set_title(title + (f" ({n_probs.pop()} problems)" if len(n_probs) == 1 else ""))
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    reports: Mapping[str, Dict[str, Any]], out_dir: Path, config: Optional[Dict[str, Any]] = None
) -> Dict[str, Path]:
    """Write ``report.json`` and ``pass_at_k.png`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps({"config": config or {}, "models": dict(reports)}, indent=1) + "\n")
    png_path = plot_pass_at_k(reports, out_dir / "pass_at_k.png")
    return {"json": json_path, "png": png_path}


def save_results(path: Path, results: Sequence[ProblemResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            d = {k: v for k, v in asdict(r).items() if v is not None or k not in ("responses", "boxed", "datasource")}
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def load_results(path: Path) -> List[ProblemResult]:
    """Per-problem results written by ``save_results`` (errors name the file and line)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(
                ProblemResult(
                    id=str(d.get("id", "")),
                    n=int(d["n"]),
                    c=int(d["c"]),
                    level=d.get("level"),
                    subject=d.get("subject"),
                    reasons=d.get("reasons") or {},
                    truncated=int(d.get("truncated", 0)),
                    boxed=d.get("boxed"),
                    datasource=d.get("datasource"),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UsageError(f"--results {path}:{lineno}: not a per-problem result line ({e})") from e
    return out
