"""The demo's results: its TensorBoard scalars and the weight-sync check in ``metrics.json``, the before/after
table, where the files are, and the per-step plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

from lens_openrlhf.tblogs import read_tensorboard


def accuracy_among_boxed(group: dict) -> float:
    """pass@1 / boxed share: how often a boxed answer is right (NaN when nothing is boxed)."""
    boxed = group.get("boxed", float("nan"))
    return group["pass@1"] / boxed if boxed and boxed == boxed else float("nan")


def one_line(table: dict) -> str:
    """``pass@1 .. (Level 1 ..), pass@k .., boxed .., accuracy among boxed ..`` of a
    :func:`lens_openrlhf.evaluation.passk.level_table`."""
    g = table["all"]
    k = max((int(x.split("@")[1]) for x in g if x.startswith("pass@")), default=1)
    lv1 = table.get("level_1", {}).get("pass@1", float("nan"))
    greedy = f", greedy pass@1 {g['greedy']:.3f}" if "greedy" in g else ""
    return (
        f"pass@1 {g['pass@1']:.3f} (Level 1 {lv1:.3f}), pass@{k} {g.get(f'pass@{k}', float('nan')):.3f}, "
        f"boxed {g.get('boxed', float('nan')):.3f}, accuracy among boxed {accuracy_among_boxed(g):.3f}{greedy}"
    )


def summarize(out: Path, seconds: float, rc: int, before: Optional[dict] = None, after: Optional[dict] = None) -> dict:
    """``metrics.json``'s content: exit code, wall time, every TensorBoard scalar, the weight-sync check, before/after.
    Prints one line on the weight syncs (actor vs vLLM log-probs after each)."""
    scalars = read_tensorboard(out / "tensorboard") if (out / "tensorboard").exists() else {}
    syncs = []
    if (out / "sync_check.jsonl").exists():
        syncs = [json.loads(x) for x in (out / "sync_check.jsonl").read_text().splitlines() if x.strip()]
    keys = ("sync", "max_abs_diff_before", "mean_abs_diff_before", "max_abs_diff_after", "mean_abs_diff_after")
    metrics = {
        "exit_code": rc,
        "wall_seconds": round(seconds, 1),
        "scalars": scalars,
        "sync_check": [{k: s[k] for k in keys} for s in syncs],
        "before": before,
        "after": after,
    }
    if syncs:
        worst = max(s["max_abs_diff_after"] for s in syncs)
        mean = sum(s["mean_abs_diff_after"] for s in syncs) / len(syncs)
        print(
            f"weight sync actor -> vLLM, {len(syncs)} syncs: |log-prob difference| per token after each sync "
            f"mean {mean:.4f}, max {worst:.4f} nats (before the first sync: max {syncs[0]['max_abs_diff_before']:.4f})"
        )
    return metrics


ROW_NAMES = {"all": "all levels", "levels_4_5": "Levels 4-5"}


def print_before_after(before: dict, after: dict) -> None:
    """Held-out pass@1, pass@k, the boxed share, accuracy among boxed answers and (where measured) greedy pass@1,
    before and after RL, per level."""
    k = max(int(x.split("@")[1]) for x in before["all"] if x.startswith("pass@"))
    cols = [("pass@1", "pass@1"), (f"pass@{k}", f"pass@{k}"), ("boxed", "boxed"), ("acc|boxed", None)]
    if "greedy" in before["all"]:
        cols.append(("greedy", "greedy"))
    print(
        "held-out problems (Hugging Face sampling at temperature 1, the same for both models); acc|boxed: accuracy "
        "among boxed answers" + ("; greedy: pass@1 of the greedy answer" if len(cols) > 4 else "")
    )
    print(f"  {'':12s} " + " ".join(f"{name + ' before':>17s} {'after':>6s}" for name, _ in cols))
    for g in before:
        row = []
        for _, key in cols:
            b = before[g].get(key, float("nan")) if key else accuracy_among_boxed(before[g])
            ag = after.get(g, {})
            x = (ag.get(key, float("nan")) if key else accuracy_among_boxed(ag)) if ag else float("nan")
            row.append(f"{b:>17.3f} {x:>6.3f}")
        print(f"  {ROW_NAMES.get(g, g.replace('level_', 'Level ')):12s} " + " ".join(row))


def print_files(out: Path, plot: bool = True) -> None:
    for what, path in (
        ("final policy (HF format)", out / "checkpoint"),
        ("DeepSpeed checkpoint", out / "ckpt" / "_actor"),
        ("TensorBoard logs", out / "tensorboard"),
        ("plot", out / "demo.png" if plot else None),
        ("metrics (json)", out / "metrics.json"),
        ("training log", out / "train.log"),
    ):
        if path is not None:
            print(f"  {what + ':':26s} {path}")


def plot_run(
    scalars: Dict[str, Dict[int, float]],
    path: Path,
    title: str = "LENS on reasoning-gym (CPU demo)",
    before: Optional[dict] = None,
    after: Optional[dict] = None,
) -> Path:
    """PNG: reward, held-out pass@1 (with the warm start's and the final policy's sampled and greedy pass@1),
    negative/mixed/all-correct group ratios and nonzero_adv_frac per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))

    def line(ax, tag, label, **kw):
        d = scalars.get(tag, {})
        if d:
            xs = sorted(d)
            ax.plot(xs, [d[x] for x in xs], marker="o", ms=3, label=label, **kw)

    line(axes[0], "train/reward", "train reward (mean)")
    line(axes[0], "train/reward/no_boxed", "answers without \\boxed{}", ls="--")
    axes[0].set_title("reward")
    for tag, label in (
        ("eval/unbiased_pass@1", "all levels"),
        ("eval/unbiased_levels_4_5_pass@1", "Levels 4-5"),
        ("eval/unbiased_level_1_pass@1", "Level 1"),
        ("eval/unbiased_level_3_pass@1", "Level 3"),
    ):
        line(axes[1], tag, label)
    steps = sorted({s for d in scalars.values() for s in d})
    for table, x, colour, label in ((before, 0, "k", "warm start"), (after, steps[-1] if steps else 0, "m", "final")):
        if table:
            axes[1].scatter([x], [table["all"]["pass@1"]], marker="*", s=80, c=colour, label=f"{label} (HF)", zorder=3)
            acc = accuracy_among_boxed(table["all"])
            axes[1].scatter([x], [acc], marker="x", s=50, c=colour, label=f"{label}: acc. among boxed", zorder=3)
            if "greedy" in table["all"]:
                axes[1].scatter(
                    [x], [table["all"]["greedy"]], marker="^", s=50, c=colour, label=f"{label}: greedy", zorder=3
                )
    axes[1].set_title("held-out pass@1")
    for tag, label in (
        ("train/lens/negative_group_ratio", "negative (all wrong)"),
        ("train/lens/mixed_group_ratio", "mixed"),
        ("train/lens/all_correct_group_ratio", "all correct"),
    ):
        line(axes[2], tag, label)
    axes[2].set_title("group kinds (training batches)")
    line(axes[3], "train/lens/nonzero_adv_frac", "nonzero_adv_frac")
    axes[3].set_title("samples with nonzero advantage")
    axes[1].set_ylim(0, 1.4)  # room above the curves for the legend: the warm start's markers sit at step 0
    for ax in axes:
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
        if not ax.get_legend_handles_labels()[0]:
            continue  # nothing labelled on this panel (e.g. a run too short to evaluate): no empty legend
        if ax is axes[1]:
            ax.legend(fontsize=6, loc="upper center", ncol=3)
        else:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
