"""Cost of LENS advantages vs GRPO, vs OpenRLHF's own group_norm path, vs the forward pass they follow.

    .venv/bin/python benchmarks/bench_estimators.py                 # paper scale: 128 x 16 x 4096
    .venv/bin/python benchmarks/bench_estimators.py --device cuda   # on a GPU (default: cuda if present)
    .venv/bin/python benchmarks/bench_estimators.py --quick         # small, for a smoke run

Measured in one run, median of repeats (these machines are shared and noisy, so compare ratios):
  grpo       group_advantages('grpo', rewards)                           [128, 16]
  lens       masked_mean_log_probs([2048, 4096] log-probs, mask) + group_advantages('lens', ...)
  lens_stats lens + group_statistics (what training logs)
  exp_maker_group_norm / exp_maker_lens
             the pinned OpenRLHF RemoteExperienceMaker.compute_advantages_and_returns on real Experience
             objects, group_norm (OpenRLHF's branch) vs lens (our patched method, vLLM log-probs in);
             CPU only: OpenRLHF runs this step on CPU tensors in the trainer actor
Target: the whole LENS computation under 1% of the log-prob forward pass that produced its inputs
(same batch, same device). That forward is ESTIMATED as 2 * n_params * tokens FLOPs at the matmul
throughput measured here on this device (an optimistic throughput, so a conservative ratio).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lens_openrlhf.estimators import group_advantages, group_statistics, masked_mean_log_probs  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(fn, device, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops(device, dtype, n=2048, repeats=5):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = bench(lambda: a @ b, device, repeats, warmup=1)
    return 2 * n**3 / t


def make_inputs(n_prompts, G, T, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = n_prompts * G
    rewards = (torch.rand(n_prompts, G, generator=g) < 0.3).float()
    rewards[: n_prompts * 2 // 5] = 0.0  # about 40% negative groups, as in the paper's Figure 2
    lengths = torch.randint(T // 8, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    log_probs = -torch.rand(B, T, generator=g).pow(3) * 3
    return rewards.to(device), log_probs.to(device=device, dtype=dtype), mask.to(device), lengths


def experience_maker_seconds(estimators, rewards, log_probs, mask, repeats, micro=16):
    """OpenRLHF's real RemoteExperienceMaker.compute_advantages_and_returns (CPU, where OpenRLHF runs it):
    ``group_norm`` is OpenRLHF's own branch; ``lens`` goes through lens_openrlhf's patched method (mean
    log-prob from ``rollout_log_probs``, advantages, statistics, then OpenRLHF's per-token code).
    The estimators are timed in alternation (repeat by repeat), medians returned as {name: seconds};
    None if OpenRLHF cannot be imported."""
    try:
        from lens_openrlhf.cpu_shims import ensure_flash_attn_importable

        ensure_flash_attn_importable()
        from types import SimpleNamespace

        from lens_openrlhf import coupling as openrlhf_adapter
        from openrlhf.trainer.ppo_utils.experience import Experience
        from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    except Exception as e:  # noqa: BLE001 - report and carry on with the rest of the benchmark
        print(f"[experience-maker path skipped: {type(e).__name__}: {e}]")
        return None
    openrlhf_adapter.install_patches(rollout_logprobs=False)
    n, G = rewards.shape
    T = mask.shape[1]

    def make_args(estimator):  # OpenRLHF's own parser and defaults, as the job gets them
        return openrlhf_adapter.parse_args(
            [
                "--advantage_estimator",
                estimator,
                "--n_samples_per_prompt",
                str(G),
                "--pretrain",
                "x",
                "--remote_rm_url",
                "r.py",
                "--vllm_num_engines",
                "1",
                "--init_kl_coef",
                "0",
                "--generate_max_len",
                str(T),
                "--data.max_len",
                str(T),
            ],
            parser=parser,
        )

    parser = openrlhf_adapter.build_parser()
    makers = {
        e: RemoteExperienceMaker(
            None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=make_args(e)), None
        )
        for e in estimators
    }
    flat = rewards.flatten().cpu()
    mask, log_probs = mask.cpu(), log_probs.cpu()

    def build():
        return [
            Experience(
                index=list(range(s, min(s + micro, n * G))),
                rewards=flat[s : s + micro].clone(),
                action_mask=mask[s : s + micro],
                rollout_log_probs=log_probs[s : s + micro],
                kl=torch.zeros(mask[s : s + micro].shape),
                info={},
            )
            for s in range(0, n * G, micro)
        ]

    times = {e: [] for e in estimators}
    for _ in range(repeats):
        for e, maker in makers.items():
            exps = build()
            t0 = time.perf_counter()
            maker.compute_advantages_and_returns(exps)
            times[e].append(time.perf_counter() - t0)
    return {e: statistics.median(t) for e, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--G", type=int, default=16)
    p.add_argument("--tokens", type=int, default=4096, help="response length (log-prob columns)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="log-prob dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--params", type=float, default=3.09e9, help="model size for the forward estimate (Qwen2.5-3B)")
    p.add_argument("--prompt-tokens", type=int, default=256, help="prompt length for the forward estimate")
    p.add_argument("--quick", action="store_true", help="32 x 16 x 512, 3 repeats")
    p.add_argument("--skip-openrlhf", action="store_true")
    a = p.parse_args()
    if a.quick:
        a.prompts, a.tokens, a.repeats = 32, 512, 3
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    rewards, log_probs, mask, _ = make_inputs(a.prompts, a.G, a.tokens, device, dtype)
    shape = (a.prompts, a.G)

    def lens():
        mlp = masked_mean_log_probs(log_probs, mask).view(shape)
        return group_advantages("lens", rewards, mlp)

    def lens_stats():
        mlp = masked_mean_log_probs(log_probs, mask).view(shape)
        adv = group_advantages("lens", rewards, mlp)
        return group_statistics(rewards, adv, mlp)

    rows = [
        ("grpo", bench(lambda: group_advantages("grpo", rewards), device, a.repeats)),
        ("lens", bench(lens, device, a.repeats)),
        ("lens_stats", bench(lens_stats, device, a.repeats)),
    ]
    if device.type == "cpu" and not a.skip_openrlhf:
        t = experience_maker_seconds(("group_norm", "lens"), rewards, log_probs, mask, max(3, a.repeats // 2))
        for est, sec in (t or {}).items():
            rows.append((f"exp_maker_{est}", sec))

    flops = matmul_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    n_tok = a.prompts * a.G * (a.tokens + a.prompt_tokens)
    fwd = 2 * a.params * n_tok / flops

    dev_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"device: {dev_name}; batch {a.prompts} prompts x {a.G} samples x {a.tokens} tokens, log-probs {a.dtype}")
    base = rows[0][1]
    print(f"{'path':<22}{'median ms':>12}{'x grpo':>10}")
    for name, sec in rows:
        print(f"{name:<22}{sec * 1e3:>12.3f}{sec / base:>10.1f}")
    lens_t = dict(rows)["lens_stats"]
    print(
        f"matmul throughput here: {flops / 1e12:.2f} TFLOP/s; ESTIMATED log-prob forward of a "
        f"{a.params / 1e9:.2f}B model over {n_tok:,} tokens: {fwd:.1f} s"
    )
    print(f"LENS (mean log-prob + advantages + stats) / estimated forward = {lens_t / fwd:.2e}  (target < 1e-2)")
    d = dict(rows)
    if "exp_maker_group_norm" in d and "exp_maker_lens" in d:
        print(
            "through OpenRLHF's experience maker: lens / group_norm = "
            f"{d['exp_maker_lens'] / d['exp_maker_group_norm']:.3f} "
            f"(LENS adds {1e3 * (d['exp_maker_lens'] - d['exp_maker_group_norm']):.1f} ms to a "
            f"{1e3 * d['exp_maker_group_norm']:.0f} ms step part)"
        )


if __name__ == "__main__":
    main()
