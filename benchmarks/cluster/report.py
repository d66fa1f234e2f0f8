"""GRPO vs LENS from OpenRLHF's own logs: step time and its parts, throughput, GPU memory, negative groups,
and LENS's overhead as a ratio to GRPO. Writes ``report.md``, ``report.png`` and ``summary.json``.

    python -m benchmarks.cluster.report --grpo DIR --lens DIR --out DIR [--warmup 1] [--format auto]
    python benchmarks/cluster/report.py  --grpo DIR --lens DIR --out DIR

``DIR`` is what one job logged; ``benchmarks/cluster/run.sh`` writes ``OUT/grpo`` and ``OUT/lens``. Read:

- TensorBoard (``--logger.tensorboard_dir``): the pinned OpenRLHF writes ``<tensorboard_dir>/<--logger.wandb.run_name>/
  events.out.tfevents.*``; every scalar of ``PPOTrainer.save_logs_and_checkpoints`` goes through
  ``TensorboardLogger.log_train`` as ``train/<key>`` at ``global_step`` (read with tensorboard's
  ``EventAccumulator``; several event files of one run, e.g. after a resume, are merged).
- W&B (``--logger.wandb.key``): the same keys, ``train/<key>``, with ``train/global_step`` as step. Read from
  the run's binary ``run-<id>.wandb`` file (offline or online run folder; history and system-metric records,
  decoded with the protobuf classes of the installed ``wandb`` package), or from a ``wandb-history.jsonl``
  (one JSON object per step, as older wandb versions wrote). ``files/wandb-summary.json`` holds only the last
  value of each key, so it is not used.
- GPU memory: the pinned OpenRLHF logs none. Read, when present, from ``gpu_memory.csv`` anywhere under ``DIR``
  (``nvidia-smi --query-gpu=timestamp,index,memory.used,memory.total --format=csv,noheader,nounits``, which
  ``run.sh`` records on the node it runs on) or from W&B system metrics ``gpu.<i>.memoryAllocatedBytes``.

Scalars used (the names the pinned OpenRLHF logs; ``timing/*`` in ``ppo_trainer.py``, ``rollout/*`` in
``PPOTrainer._compute_rollout_stats``, ``lens/*`` put into ``experience.info`` by lens_openrlhf's adapter and
averaged by the actor's ``fit``):

- ``train/timing/step_total`` (sync trainer: the sum of the parts below; async trainer: wall time of the step),
  ``train/timing/generation`` (vLLM rollout and the reward function), ``train/timing/make_experience``
  (actor/reference log-prob forwards and the advantages: LENS's own computation is here),
  ``train/timing/ppo_train``, ``train/timing/broadcast`` (weight sync to vLLM);
- ``train/rollout/num_samples``, ``train/rollout/response_length_mean`` (the whole batch; fallback
  ``train/response_length``): samples/s = num_samples / step_total, generated tokens/s = num_samples x
  response_length_mean / step_total (and / generation for the rollout phase alone);
- ``train/lens/negative_group_ratio`` (also ``mixed_group_ratio``, ``all_correct_group_ratio``), which the
  package logs for ``grpo`` as for ``lens``; ``train/rollout/reward_mean``.

The first ``--warmup`` logged steps of each run (default 1: vLLM and DeepSpeed warm up in step 1) are left out of
every median and mean; the plots show every step. Overhead = median over LENS's steps / median over GRPO's steps.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# ----------------------------------------------------------------------------------------------------------
# The scalar names the pinned OpenRLHF logs (TensorBoard tag == W&B key)
# ----------------------------------------------------------------------------------------------------------
STEP_TOTAL = "train/timing/step_total"
PARTS = (
    ("generation", "train/timing/generation"),
    ("make_experience", "train/timing/make_experience"),
    ("ppo_train", "train/timing/ppo_train"),
    ("broadcast", "train/timing/broadcast"),
)
NUM_SAMPLES = "train/rollout/num_samples"
RESPONSE_LENGTH = "train/rollout/response_length_mean"
RESPONSE_LENGTH_FALLBACK = "train/response_length"
REWARD = "train/rollout/reward_mean"
NEGATIVE = "train/lens/negative_group_ratio"
MIXED = "train/lens/mixed_group_ratio"
ALL_CORRECT = "train/lens/all_correct_group_ratio"
W_AND_B_STEP = "train/global_step"
GPU_MEMORY_CSV = "gpu_memory.csv"
WANDB_GPU_BYTES = re.compile(r"^(?:system/)?gpu\.(?:process\.)?(\d+)\.memoryAllocatedBytes$")

Series = Dict[int, float]


class ReportError(Exception):
    """A problem with the inputs, worded for the user (names the folder or file)."""


@dataclass
class RunLogs:
    label: str
    root: Path
    kind: str  # "tensorboard" | "wandb" | "wandb-history.jsonl"
    source: Path  # the event folder or file that was read
    scalars: Dict[str, Series]
    gpu_memory_peak_mib: Optional[float] = None
    gpu_memory_source: Optional[str] = None
    notes: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# Finding and reading the logs
# ----------------------------------------------------------------------------------------------------------
def _runs_in(root: Path, pattern: str) -> List[Path]:
    if root.is_file():
        return [root] if root.match(pattern) else []
    return sorted(root.rglob(pattern))


def _one(label: str, root: Path, found: List[Path], what: str) -> Path:
    if len(found) > 1:
        listed = "\n  ".join(str(p) for p in found)
        raise ReportError(f"{label}: {root} holds {len(found)} {what}; pass the folder of the one to read:\n  {listed}")
    return found[0]


def load_run(label: str, root, fmt: str = "auto") -> RunLogs:
    """The scalars of one job from ``root`` (see the module docstring for what is read)."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"{label}: {root} does not exist")
    tb_dirs = sorted({p.parent for p in _runs_in(root, "events.out.tfevents.*")})
    wandb_files = _runs_in(root, "*.wandb")
    jsonl_files = _runs_in(root, "wandb-history.jsonl")
    if fmt == "auto":
        fmt = "tensorboard" if tb_dirs else "wandb" if (wandb_files or jsonl_files) else ""
    if fmt == "tensorboard":
        if not tb_dirs:
            raise ReportError(f"{label}: no TensorBoard event files (events.out.tfevents.*) under {root}")
        src = _one(label, root, tb_dirs, "TensorBoard runs (folders with events.out.tfevents.* files)")
        run = RunLogs(label, root, "tensorboard", src, read_tensorboard(src, label))
    elif fmt == "wandb":
        if wandb_files:
            src = _one(label, root, wandb_files, "W&B runs (*.wandb files)")
            scalars, stats = read_wandb_file(src, label)
            run = RunLogs(label, root, "wandb", src, scalars)
            _gpu_from_wandb_stats(run, stats)
        elif jsonl_files:
            src = _one(label, root, jsonl_files, "wandb-history.jsonl files")
            run = RunLogs(label, root, "wandb-history.jsonl", src, read_wandb_history_jsonl(src, label))
        else:
            raise ReportError(f"{label}: no W&B run file (*.wandb) or wandb-history.jsonl under {root}")
    elif fmt == "":
        raise ReportError(
            f"{label}: no logs under {root}: no TensorBoard event files (events.out.tfevents.*), no W&B run file "
            "(*.wandb), no wandb-history.jsonl. OpenRLHF writes TensorBoard logs to "
            "<--logger.tensorboard_dir>/<--logger.wandb.run_name>/ and W&B runs to ./wandb/ of the job's "
            "working directory; did the job log a step (--logger.logging_steps)?"
        )
    else:
        raise ReportError(f"unknown format {fmt!r}: auto, tensorboard or wandb")
    if not run.scalars:
        raise ReportError(f"{label}: {run.source} holds no scalars (did the job finish a step?)")
    csvs = _runs_in(root, GPU_MEMORY_CSV)
    if csvs:
        peak = 0.0
        for c in csvs:
            peak = max(peak, read_gpu_memory_csv(c))
        if peak > 0:
            run.gpu_memory_peak_mib = peak
            run.gpu_memory_source = ", ".join(str(c) for c in csvs) + " (nvidia-smi memory.used)"
    return run


def read_tensorboard(run_dir: Path, label: str = "run") -> Dict[str, Series]:
    """tag -> {step: value} of every scalar in the event files of ``run_dir`` (later events win)."""
    from lens_openrlhf.tblogs import TensorBoardLogError, read_scalars

    try:
        return read_scalars(run_dir, label)
    except TensorBoardLogError as e:
        raise ReportError(str(e)) from e


# --- W&B ---------------------------------------------------------------------------------------------------
_WANDB_HEADER = b":W&B"
_WANDB_HEADER_LEN = 7  # ident (4), magic 0xBEE1 (2, little endian), version (1)
_BLOCK = 32768  # the LevelDB log format: 32 KiB blocks of records with a 7-byte header each
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def iter_wandb_records(path: Path, label: str = "run") -> Iterator[bytes]:
    """Payloads (serialized ``wandb_internal_pb2.Record``) of a ``.wandb`` file; a torn tail is ignored."""
    data = Path(path).read_bytes()
    if len(data) < _WANDB_HEADER_LEN or data[:4] != _WANDB_HEADER:
        raise ReportError(f"{label}: {path} is not a W&B run file (no ':W&B' header)")
    pos, pending = _WANDB_HEADER_LEN, None
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # the rest of a block too small for a header is zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:  # zero padding (preallocated or torn tail)
            pos += left - 7
            continue
        chunk = data[pos : pos + length]
        if len(chunk) < length:
            return  # torn last record
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE and pending is not None:
            pending += chunk
        elif kind == _LAST and pending is not None:
            yield pending + chunk
            pending = None
        else:
            raise ReportError(f"{label}: {path}: unexpected record type {kind} at byte {pos - length - 7}")


def _number(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _add_history_row(row: dict, out: Dict[str, Series], fallback_step: Optional[int]) -> None:
    """OpenRLHF logs ``train/*`` with ``train/global_step`` and ``eval/*`` with ``eval/global_step``."""
    for key, value in row.items():
        v = _number(value)
        if v is None or key.startswith("_") or key.endswith("/global_step"):
            continue
        prefix = key.split("/", 1)[0]
        step = row.get(f"{prefix}/global_step", row.get("_step", fallback_step))
        if _number(step) is None:
            continue
        out.setdefault(key, {})[int(step)] = v


def read_wandb_file(path: Path, label: str = "run") -> Tuple[Dict[str, Series], Dict[str, List[float]]]:
    """(history key -> {step: value}, system-metric key -> values) from a binary ``run-<id>.wandb`` file."""
    try:
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as e:
        raise ReportError(
            f"{label}: reading {path} needs the wandb package (its protobuf classes): {e}. Or pass the "
            "TensorBoard logs (--logger.tensorboard_dir)."
        )
    scalars: Dict[str, Series] = {}
    stats: Dict[str, List[float]] = {}
    for i, payload in enumerate(iter_wandb_records(path, label)):
        rec = pb.Record()
        try:
            rec.ParseFromString(payload)
        except Exception as e:  # noqa: BLE001
            raise ReportError(f"{label}: {path}: record {i} does not decode: {e}")
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                try:
                    row[key] = json.loads(item.value_json)
                except ValueError:
                    continue
            _add_history_row(row, scalars, rec.history.step.num if rec.history.HasField("step") else None)
        elif kind == "stats":
            for item in rec.stats.item:
                try:
                    v = _number(json.loads(item.value_json))
                except ValueError:
                    continue
                if v is not None:
                    stats.setdefault(item.key, []).append(v)
    return scalars, stats


def read_wandb_history_jsonl(path: Path, label: str = "run") -> Dict[str, Series]:
    scalars: Dict[str, Series] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ReportError(f"{label}: {path}, line {n}: not JSON: {e}")
        _add_history_row(row, scalars, n - 1)
    return scalars


def _gpu_from_wandb_stats(run: RunLogs, stats: Dict[str, List[float]]) -> None:
    peak = [max(v) for k, v in stats.items() if WANDB_GPU_BYTES.match(k) and v]
    if peak:
        run.gpu_memory_peak_mib = max(peak) / 2**20
        run.gpu_memory_source = f"{run.source} (W&B system metrics gpu.<i>.memoryAllocatedBytes)"


def read_gpu_memory_csv(path: Path) -> float:
    """Peak ``memory.used`` (MiB) in an nvidia-smi csv (``timestamp, index, memory.used, memory.total``)."""
    peak = 0.0
    for line in Path(path).read_text().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 3:
            continue
        try:
            peak = max(peak, float(cols[2].split()[0]))
        except (ValueError, IndexError):
            continue  # header line
    return peak


# ----------------------------------------------------------------------------------------------------------
# The numbers
# ----------------------------------------------------------------------------------------------------------
def used_steps(run: RunLogs, warmup: int) -> List[int]:
    """The logged steps of ``train/timing/step_total`` after the first ``warmup`` ones."""
    if STEP_TOTAL not in run.scalars:
        tags = sorted(run.scalars)
        shown = ", ".join(tags[:25]) + (", ..." if len(tags) > 25 else "")
        raise ReportError(
            f"{run.label}: {run.source} has no {STEP_TOTAL} (the pinned OpenRLHF's step time); it has: {shown}"
        )
    steps = sorted(run.scalars[STEP_TOTAL])
    if len(steps) <= warmup:
        run.notes.append(f"only {len(steps)} step(s) logged: --warmup {warmup} ignored, every step used")
        return steps
    return steps[warmup:]


def _values(run: RunLogs, tag: str, steps: Sequence[int]) -> List[float]:
    s = run.scalars.get(tag, {})
    return [s[i] for i in steps if i in s]


def _stat(values: List[float]) -> Optional[dict]:
    if not values:
        return None
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "n": len(values)}


def per_step_throughput(run: RunLogs) -> Dict[str, Series]:
    """samples/s, generated tokens/s (whole step, and the generation phase), seconds per 1k generated tokens."""
    total = run.scalars.get(STEP_TOTAL, {})
    gen = run.scalars.get("train/timing/generation", {})
    n = run.scalars.get(NUM_SAMPLES, {})
    length = run.scalars.get(RESPONSE_LENGTH) or run.scalars.get(RESPONSE_LENGTH_FALLBACK, {})
    out: Dict[str, Series] = {
        "samples_per_s": {},
        "gen_tokens_per_s": {},
        "gen_tokens_per_s_generation": {},
        "s_per_1k_gen_tokens": {},
    }
    for step, t in total.items():
        if step not in n or t <= 0:
            continue
        out["samples_per_s"][step] = n[step] / t
        if step in length and length[step] > 0:
            tokens = n[step] * length[step]
            out["gen_tokens_per_s"][step] = tokens / t
            out["s_per_1k_gen_tokens"][step] = 1000.0 * t / tokens
            if gen.get(step, 0) > 0:
                out["gen_tokens_per_s_generation"][step] = tokens / gen[step]
    return out


def summarize_run(run: RunLogs, warmup: int) -> dict:
    steps = used_steps(run, warmup)
    thr = per_step_throughput(run)
    res = {
        "label": run.label,
        "kind": run.kind,
        "source": str(run.source),
        "steps_logged": sorted(run.scalars[STEP_TOTAL]),
        "steps_used": steps,
        "step_total": _stat(_values(run, STEP_TOTAL, steps)),
        "parts": {name: _stat(_values(run, tag, steps)) for name, tag in PARTS},
        "throughput": {k: _stat([v[s] for s in steps if s in v]) for k, v in thr.items()},
        "num_samples": _stat(_values(run, NUM_SAMPLES, steps)),
        "response_length": _stat(_values(run, RESPONSE_LENGTH, steps) or _values(run, RESPONSE_LENGTH_FALLBACK, steps)),
        "reward_mean": _stat(_values(run, REWARD, steps)),
        "negative_group_ratio": _stat(_values(run, NEGATIVE, steps)),
        "mixed_group_ratio": _stat(_values(run, MIXED, steps)),
        "all_correct_group_ratio": _stat(_values(run, ALL_CORRECT, steps)),
        "gpu_memory_peak_mib": run.gpu_memory_peak_mib,
        "gpu_memory_source": run.gpu_memory_source,
        "notes": run.notes,
    }
    return res


def _ratio(a: Optional[dict], b: Optional[dict], key: str = "median") -> Optional[float]:
    if not a or not b or not b[key]:
        return None
    return a[key] / b[key]


def compare(grpo: dict, lens: dict) -> dict:
    """LENS / GRPO ratios of medians (and of means for the step time)."""
    return {
        "step_total_median": _ratio(lens["step_total"], grpo["step_total"]),
        "step_total_mean": _ratio(lens["step_total"], grpo["step_total"], "mean"),
        "make_experience_median": _ratio(lens["parts"]["make_experience"], grpo["parts"]["make_experience"]),
        "parts_median": {k: _ratio(lens["parts"][k], grpo["parts"][k]) for k, _ in PARTS},
        "s_per_1k_gen_tokens_median": _ratio(
            lens["throughput"]["s_per_1k_gen_tokens"], grpo["throughput"]["s_per_1k_gen_tokens"]
        ),
        "samples_per_s_median": _ratio(lens["throughput"]["samples_per_s"], grpo["throughput"]["samples_per_s"]),
        "gen_tokens_per_s_median": _ratio(
            lens["throughput"]["gen_tokens_per_s"], grpo["throughput"]["gen_tokens_per_s"]
        ),
        "gpu_memory_peak": (
            lens["gpu_memory_peak_mib"] / grpo["gpu_memory_peak_mib"]
            if lens["gpu_memory_peak_mib"] and grpo["gpu_memory_peak_mib"]
            else None
        ),
    }


# ----------------------------------------------------------------------------------------------------------
# Markdown and PNG
# ----------------------------------------------------------------------------------------------------------
def _f(x: Optional[float], fmt: str = "{:.3g}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _med(s: Optional[dict]) -> Optional[float]:
    return None if s is None else s["median"]


def _steps_text(s: dict) -> str:
    used = s["steps_used"]
    return f"{len(s['steps_logged'])} logged, {len(used)} used (steps {used[0]}..{used[-1]})" if used else "none"


def markdown(grpo: dict, lens: dict, ratios: dict, warmup: int) -> str:
    L = ["# GRPO vs LENS on one cluster", ""]
    L += ["| run | logs | read from | steps |", "| --- | --- | --- | --- |"]
    for s in (grpo, lens):
        L.append(f"| {s['label']} | {s['kind']} | `{s['source']}` | {_steps_text(s)} |")
    L += [
        "",
        f"Medians and means leave out the first {warmup} logged step(s) of each run (warm-up); plots show all.",
        "",
    ]

    L += ["## LENS overhead (LENS / GRPO)", ""]
    st_g, st_l = _med(grpo["step_total"]), _med(lens["step_total"])
    me_g, me_l = _med(grpo["parts"]["make_experience"]), _med(lens["parts"]["make_experience"])
    L.append(
        f"- **median step time: {_f(ratios['step_total_median'], '{:.3f}')}** "
        f"({_f(st_l, '{:.3f}')} s / {_f(st_g, '{:.3f}')} s; ratio of means {_f(ratios['step_total_mean'], '{:.3f}')})"
    )
    L.append(
        f"- **median make_experience time: {_f(ratios['make_experience_median'], '{:.3f}')}** "
        f"({_f(me_l, '{:.3f}')} s / {_f(me_g, '{:.3f}')} s): the part where LENS computes its advantages"
    )
    L.append(
        f"- median step time per generated token: {_f(ratios['s_per_1k_gen_tokens_median'], '{:.3f}')} "
        "(corrects for the runs generating responses of different lengths)"
    )
    L.append("")

    L += [
        "## Step time and its parts (median s per step)",
        "",
        "| part | GRPO | LENS | LENS / GRPO | GRPO mean | LENS mean |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("step_total", grpo["step_total"], lens["step_total"], ratios["step_total_median"])]
    rows += [(k, grpo["parts"][k], lens["parts"][k], ratios["parts_median"][k]) for k, _ in PARTS]
    for name, g, l, r in rows:
        L.append(
            f"| {name} | {_f(_med(g), '{:.3f}')} | {_f(_med(l), '{:.3f}')} | {_f(r, '{:.3f}')} | "
            f"{_f(g and g['mean'], '{:.3f}')} | {_f(l and l['mean'], '{:.3f}')} |"
        )
    L.append("")

    L += [
        "## Throughput and memory (median over steps)",
        "",
        "| | GRPO | LENS | LENS / GRPO |",
        "| --- | ---: | ---: | ---: |",
    ]
    thr_rows = [
        ("samples / s (whole step)", "samples_per_s", ratios["samples_per_s_median"]),
        ("generated tokens / s (whole step)", "gen_tokens_per_s", ratios["gen_tokens_per_s_median"]),
        ("generated tokens / s (generation phase)", "gen_tokens_per_s_generation", None),
    ]
    for text, key, r in thr_rows:
        g, l = _med(grpo["throughput"][key]), _med(lens["throughput"][key])
        r = r if r is not None else (l / g if g and l is not None else None)
        L.append(f"| {text} | {_f(g, '{:.1f}')} | {_f(l, '{:.1f}')} | {_f(r, '{:.3f}')} |")
    for text, key in (
        ("samples per step", "num_samples"),
        ("response length (tokens, mean)", "response_length"),
        ("reward mean", "reward_mean"),
    ):
        g, l = _med(grpo[key]), _med(lens[key])
        L.append(
            f"| {text} | {_f(g, '{:.4g}')} | {_f(l, '{:.4g}')} "
            f"| {_f(l / g if g and l is not None else None, '{:.3f}')} |"
        )
    L.append(
        f"| peak GPU memory (MiB) | {_f(grpo['gpu_memory_peak_mib'], '{:.0f}')} | "
        f"{_f(lens['gpu_memory_peak_mib'], '{:.0f}')} | {_f(ratios['gpu_memory_peak'], '{:.3f}')} |"
    )
    L.append("")
    for s in (grpo, lens):
        if s["gpu_memory_source"]:
            L.append(f"- {s['label']} GPU memory from {s['gpu_memory_source']}")
    if not (grpo["gpu_memory_source"] or lens["gpu_memory_source"]):
        L.append(
            "- GPU memory: not logged (the pinned OpenRLHF logs none; run.sh records `gpu_memory.csv` with nvidia-smi "
            "where it is available, and W&B runs carry system metrics)."
        )
    L.append("")

    L += ["## Negative groups (all answers wrong) per step", ""]
    neg_g, neg_l = grpo["negative_group_ratio"], lens["negative_group_ratio"]
    L.append(
        f"Mean `train/lens/negative_group_ratio` over the steps used: GRPO {_f(neg_g and neg_g['mean'], '{:.3f}')}, "
        f"LENS {_f(neg_l and neg_l['mean'], '{:.3f}')}. GRPO gives these groups zero advantage; LENS does not."
    )
    L += ["", ""]
    return "\n".join(L)


def negative_table(runs: Dict[str, RunLogs]) -> str:
    steps = sorted({s for r in runs.values() for s in r.scalars.get(NEGATIVE, {})})
    if not steps:
        return "`train/lens/negative_group_ratio` was not logged by either run.\n"
    lines = ["| step | " + " | ".join(runs) + " |", "| ---: |" + " ---: |" * len(runs)]
    for s in steps:
        lines.append(
            f"| {s} | " + " | ".join(_f(r.scalars.get(NEGATIVE, {}).get(s), "{:.3f}") for r in runs.values()) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: Dict[str, RunLogs], summaries: Dict[str, dict], warmup: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    colors = {"GRPO": "tab:blue", "LENS": "tab:orange"}

    def series(a, run: RunLogs, data: Series, what: str):
        if data:
            xs = sorted(data)
            a.plot(xs, [data[x] for x in xs], marker="o", ms=3, label=run.label, color=colors.get(run.label))
        a.set_title(what)
        a.set_xlabel("step")

    for run in runs.values():
        series(ax[0, 0], run, run.scalars.get(STEP_TOTAL, {}), "step time (s): train/timing/step_total")
        series(ax[1, 0], run, run.scalars.get(NEGATIVE, {}), "negative-group ratio: train/lens/negative_group_ratio")
        series(ax[1, 1], run, per_step_throughput(run)["gen_tokens_per_s"], "generated tokens / s (whole step)")
    for a in (ax[0, 0], ax[1, 0], ax[1, 1]):
        first = [sorted(r.scalars.get(STEP_TOTAL, {}))[:warmup] for r in runs.values()]
        last_warm = max((f[-1] for f in first if f), default=None)
        if last_warm is not None and warmup:
            a.axvspan(min(f[0] for f in first if f) - 0.5, last_warm + 0.5, color="grey", alpha=0.15, label="warm-up")
        a.legend(fontsize=8)
    ax[1, 0].set_ylim(-0.05, 1.05)
    used = [summaries[k]["steps_used"] for k in runs]
    after = [
        runs[k].scalars[STEP_TOTAL][s]
        for k, u in zip(runs, used)
        for s in u
        if s not in sorted(runs[k].scalars[STEP_TOTAL])[:warmup]
    ]
    every = [v for r in runs.values() for v in r.scalars.get(STEP_TOTAL, {}).values()]
    if after and max(every) > 3 * max(after):  # the warm-up step would flatten the rest
        ax[0, 0].set_ylim(0, 1.3 * max(after))
        ax[0, 0].text(
            0.02,
            0.95,
            f"warm-up step(s) off scale (max {max(every):.1f} s)",
            transform=ax[0, 0].transAxes,
            fontsize=8,
            va="top",
        )

    a = ax[0, 1]
    labels = list(summaries)
    bottoms = [0.0] * len(labels)
    for name, _ in PARTS:
        vals = [(_med(summaries[k]["parts"][name]) or 0.0) for k in labels]
        a.bar(labels, vals, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    for i, k in enumerate(labels):
        tot = _med(summaries[k]["step_total"])
        if tot is not None:
            a.plot([i - 0.4, i + 0.4], [tot, tot], color="black", lw=1.5, label="median step_total" if i == 0 else None)
    a.set_title("median seconds per step, by part (after warm-up)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(grpo_dir, lens_dir, out_dir, warmup: int = 1, fmt: str = "auto", png: bool = True) -> dict:
    """Read both runs, write ``report.md``, ``summary.json`` (and ``report.png``) to ``out_dir``; return the summary."""
    if warmup < 0:
        raise ReportError("--warmup must be >= 0")
    runs = {"GRPO": load_run("GRPO", grpo_dir, fmt), "LENS": load_run("LENS", lens_dir, fmt)}
    summaries = {k: summarize_run(r, warmup) for k, r in runs.items()}
    ratios = compare(summaries["GRPO"], summaries["LENS"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png_path = out / "report.png"
    md = markdown(summaries["GRPO"], summaries["LENS"], ratios, warmup)
    md += negative_table(runs)
    notes = [f"- {k}: {n}" for k, s in summaries.items() for n in s["notes"]]
    if png:
        plot(runs, summaries, warmup, png_path)
        md += f"\n![GRPO vs LENS]({png_path.name})\n"
    if notes:
        md += "\n## Notes\n\n" + "\n".join(notes) + "\n"
    (out / "report.md").write_text(md)
    summary = {"warmup": warmup, "runs": summaries, "lens_over_grpo": ratios}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grpo", required=True, help="the GRPO job's log folder (TensorBoard or W&B)")
    p.add_argument("--lens", required=True, help="the LENS job's log folder (TensorBoard or W&B)")
    p.add_argument("--out", required=True, help="where report.md, report.png and summary.json go")
    p.add_argument("--warmup", type=int, default=1, help="logged steps left out of medians (default 1)")
    p.add_argument(
        "--format",
        choices=("auto", "tensorboard", "wandb"),
        default="auto",
        help="auto (default): TensorBoard if the folder has event files, else W&B",
    )
    p.add_argument("--no-png", action="store_true", help="skip the plot")
    a = p.parse_args(argv)
    try:
        summary = build_report(a.grpo, a.lens, a.out, a.warmup, a.format, png=not a.no_png)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r = summary["lens_over_grpo"]
    g, l = summary["runs"]["GRPO"], summary["runs"]["LENS"]
    print(
        f"LENS / GRPO median step time      {_f(r['step_total_median'], '{:.3f}')}  "
        f"({_f(_med(l['step_total']), '{:.3f}')} s / {_f(_med(g['step_total']), '{:.3f}')} s)"
    )
    print(f"LENS / GRPO median make_experience {_f(r['make_experience_median'], '{:.3f}')}")
    print(
        "mean negative-group ratio          GRPO "
        f"{_f(g['negative_group_ratio'] and g['negative_group_ratio']['mean'], '{:.3f}')}"
        f"  LENS {_f(l['negative_group_ratio'] and l['negative_group_ratio']['mean'], '{:.3f}')}"
    )
    out = Path(a.out)
    print(
        f"report: {out / 'report.md'}" + ("" if a.no_png else f", {out / 'report.png'}") + f", {out / 'summary.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
