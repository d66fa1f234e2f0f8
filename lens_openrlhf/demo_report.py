"""The demo's results: its TensorBoard scalars, the summary it prints and saves, the before/after table
and the per-step plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

LEVEL_NAMES = {1: "Level 1", 2: "Level 2", 3: "Level 3", 4: "Level 4", 5: "Level 5"}


def read_tensorboard(tb_dir: Path) -> Dict[str, Dict[int, float]]:
    """tag -> {step: value} of the run's TensorBoard logs ({} when the run logged nothing)."""
    from lens_openrlhf.tblogs import TensorBoardLogError, read_scalars

    try:
        return read_scalars(tb_dir, "demo")
    except TensorBoardLogError:
        return {}


SUMMARY_TAGS = (
    "train/reward",
    "train/reward/no_boxed",
    "train/policy_loss",
    "train/lens/negative_group_ratio",
    "train/lens/mixed_group_ratio",
    "train/lens/all_correct_group_ratio",
    "train/lens/nonzero_adv_frac",
    "train/lens/mean_pbar",
    "train/lens/mean_calibrated_reward_incorrect",
    "train/actor_grad_norm",
    "train/timing/step_total",
    "eval/unbiased_pass@1",
    "eval/unbiased_levels_4_5_pass@1",
)


def summarize(out: Path, seconds: float, rc: int) -> dict:
    scalars = read_tensorboard(out / "tensorboard") if (out / "tensorboard").exists() else {}
    syncs = []
    if (out / "sync_check.jsonl").exists():
        syncs = [json.loads(l) for l in (out / "sync_check.jsonl").read_text().splitlines() if l.strip()]
    metrics = {
        "exit_code": rc,
        "wall_seconds": round(seconds, 1),
        "scalars": scalars,
        "sync_check": [
            {
                k: s[k]
                for k in (
                    "sync",
                    "max_abs_diff_before",
                    "mean_abs_diff_before",
                    "max_abs_diff_after",
                    "mean_abs_diff_after",
                )
            }
            for s in syncs
        ],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    steps = sorted({s for d in scalars.values() for s in d})
    print("\n==================== LENS CPU demo: summary ====================")
    print(f"exit code {rc}, wall time {seconds:.0f} s, {len(steps)} PPO steps logged")
    if steps:  # one row per step (tags as columns: short names)
        tags = [t for t in SUMMARY_TAGS if t in scalars]
        names = [
            t.split("/")[-1].replace("_group_ratio", "").replace("unbiased_", "").replace("calibrated_reward", "cal_r")
            for t in tags
        ]
        width = [max(9, len(n)) for n in names]
        print("step " + " ".join(f"{n:>{w}}" for n, w in zip(names, width)))
        for st in steps:
            print(
                f"{st:>4} "
                + " ".join(f"{scalars[t][st]:>{w}.4g}" if st in scalars[t] else " " * w for t, w in zip(tags, width))
            )
        evals = {t[len("eval/unbiased_") :]: v for t, v in scalars.items() if t.startswith("eval/unbiased_")}
        if evals:
            step = max(s for v in evals.values() for s in v)
            ks = sorted({int(t.rsplit("@", 1)[1]) for t in evals})

            def row(prefix):
                return "  ".join(
                    f"pass@{k} {evals[f'{prefix}pass@{k}'][step]:.3f}" for k in ks if f"{prefix}pass@{k}" in evals
                )

            print(f"evaluation after step {step} (held-out prompts, unbiased pass@k; all tags in metrics.json):")
            print(f"  all levels   {row('')}")
            print(f"  Levels 4-5   {row('levels_4_5_')}")
            for level in range(1, 6):
                if f"level_{level}_pass@1" in evals:
                    print(f"  Level {level}      {row(f'level_{level}_')}")
    for s in metrics["sync_check"]:
        print(
            f"weight sync {s['sync']}: |actor - vLLM| log-prob per token: "
            f"before sync max {s['max_abs_diff_before']:.4f} "
            f"(mean {s['mean_abs_diff_before']:.4f}); after sync max {s['max_abs_diff_after']:.4f} "
            f"(mean {s['mean_abs_diff_after']:.4f})"
        )
    print(f"checkpoint (HF format, final policy): {out / 'checkpoint'}")
    print(f"DeepSpeed checkpoint:                 {out / 'ckpt' / '_actor'}")
    print(f"TensorBoard logs:                     {out / 'tensorboard'}   (tensorboard --logdir {out / 'tensorboard'})")
    print(f"metrics (json):                       {out / 'metrics.json'}")
    print(f"full log:                             {out / 'train.log'}")
    print("================================================================")
    return metrics


def print_before_after(before: dict, after: dict) -> None:
    """Columns: pass@k (unbiased) before/after, then the share of answers with a ``\\boxed{}`` (``boxed``)."""
    keys = {k for t in (before, after) for g in t.values() for k in g}
    ks = sorted((k for k in keys if k.startswith("pass@")), key=lambda k: int(k.split("@")[1]))
    ks += [k for k in ("boxed",) if k in keys]
    print(
        "held-out problems, unbiased pass@k and the share of boxed answers (Hugging Face sampling at temperature 1, "
        "the same for both models):"
    )
    print(f"  {'':12s} " + " ".join(f"{'before ' + k:>14s} {'after ' + k:>13s}" for k in ks))
    for g in before:
        name = {"all": "all levels", "levels_4_5": "Levels 4-5"}.get(g, g.replace("level_", "Level "))
        print(
            f"  {name:12s} "
            + " ".join(
                f"{before[g].get(k, float('nan')):>14.3f} {after.get(g, {}).get(k, float('nan')):>13.3f}" for k in ks
            )
        )


def plot_run(
    scalars: Dict[str, Dict[int, float]],
    path: Path,
    title: str = "LENS on reasoning-gym (CPU demo)",
    before: Optional[dict] = None,
    after: Optional[dict] = None,
) -> Path:
    """PNG: reward, held-out pass@1, negative/mixed/all-correct group ratios and nonzero_adv_frac per step."""
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
    if before:
        axes[1].scatter(
            [0], [before["all"]["pass@1"]], marker="*", s=80, c="k", label="warm start (HF sampling)", zorder=3
        )
    steps = sorted({s for d in scalars.values() for s in d})
    if after and steps:
        axes[1].scatter(
            [steps[-1]], [after["all"]["pass@1"]], marker="*", s=80, c="m", label="final policy (HF sampling)", zorder=3
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
    for ax in axes:
        ax.set_xlabel("PPO step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
