"""How much of a LENS update comes from all-incorrect groups, measured on the demo's policy and training prompts.

    .venv/bin/python benchmarks/negative_groups.py [--prompts 64] [--out outputs/negative_groups]

The demo's warm start (:func:`lens_openrlhf.demo.setups.prepare`, cached) samples G answers to each of ``--prompts``
training prompts (Hugging Face, temperature 1, float32), the reasoning-gym scorer gives the rewards, and the
policy's own mean token log-probs give pbar (pi_old = the policy: the first update of a rollout). For G in (8, 16)
and alpha in (0.25, 1.0), with LENS advantages (``group_advantages('lens', ...)``), it prints:

- the group kinds and, within all-incorrect groups, the spread of pbar (standard deviation and max - min);
- the share of the batch's sum of |advantage| that sits in all-incorrect groups;
- the gradient of the GRPO loss at ratio 1 (eq. 3: each response's token mean, then the mean over responses; what
  OpenRLHF's ``seq-mean-token-mean`` PolicyLoss gives on the first micro-step) split by group kind: the norms of
  the negative-group part, the mixed-group part and their sum, and the cosine between the two parts.

A bound holds whatever the model: in an all-incorrect group every calibrated reward lies in [-1/G, 0] (pbar_i /
(D - pbar_i) <= 1 with D = 2 max pbar), so after de-meaning and the weight alpha each |advantage| is at most alpha/G
and the group's mean |advantage| at most alpha/(2G); a mixed group's GRPO-normalised advantages have mean |A| near 0.8
(0.5-1.0 for binary rewards). The printed table puts the measured values next to that bound.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def sample(model_path: Path, rows: List[dict], G: int, max_new_tokens: int, seed: int):
    """(token ids of prompt + response, response masks, rewards [P, G]) for G samples per row."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lens_openrlhf.demo.heldout import sampling
    from lens_openrlhf.evaluation.hf import prompt_text
    from lens_openrlhf.rewards.gym_reward import score_text

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    torch.manual_seed(seed)
    enc = tok(
        [prompt_text(tok, r["prompt"], True) for r in rows], return_tensors="pt", padding=True, add_special_tokens=False
    )
    with torch.no_grad():
        seqs = model.generate(**enc, **sampling(tok, G, max_new_tokens))
    P = enc["input_ids"].shape[1]
    resp = seqs[:, P:]
    # the response's tokens: up to and including the first EOS
    is_eos = resp == tok.eos_token_id
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    mask = ~after_eos & (resp != tok.pad_token_id) | is_eos & ~after_eos
    prompt_mask = enc["attention_mask"].repeat_interleave(G, 0)
    texts = tok.batch_decode(resp, skip_special_tokens=True)
    rewards = torch.tensor([float(score_text(t, rows[i // G]["label"])) for i, t in enumerate(texts)]).view(-1, G)
    return model, seqs, torch.cat([prompt_mask, mask.long()], 1), mask, P, rewards


def token_log_probs(model, seqs, attention, P):
    import torch

    logits = model(input_ids=seqs, attention_mask=attention).logits[:, P - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, seqs[:, P:].unsqueeze(-1)).squeeze(-1)


def measure(model, seqs, attention, mask, P, rewards, alpha: float) -> dict:
    import torch

    from lens_openrlhf.estimators import group_advantages, masked_mean_log_probs

    n_prompts, G = rewards.shape
    with torch.no_grad():
        mean_lp = masked_mean_log_probs(token_log_probs(model, seqs, attention, P), mask).view(n_prompts, G)
    adv = group_advantages("lens", rewards, mean_lp, alpha=alpha)
    correct = rewards.sum(1)
    kind = torch.where(correct == 0, 0, torch.where(correct == G, 2, 1))  # 0 negative, 1 mixed, 2 all-correct
    absA = adv.abs()
    neg, mixed = kind == 0, kind == 1
    pbar = mean_lp.exp()
    spreads = [(pbar[i].std().item(), (pbar[i].max() - pbar[i].min()).item()) for i in range(n_prompts) if neg[i]]

    grads = {}
    for name, rows in (("negative", neg), ("mixed", mixed)):
        model.zero_grad()
        w = (adv * rows.unsqueeze(1)).reshape(-1)  # this kind's advantages, 0 elsewhere
        lp = token_log_probs(model, seqs, attention, P)
        per_seq = (lp * mask).sum(1) / mask.sum(1).clamp(min=1)
        (-(w * per_seq).sum() / w.numel()).backward()
        grads[name] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).clone()
    g_neg, g_mix = grads["negative"], grads["mixed"]
    total = g_neg + g_mix
    return {
        "alpha": alpha,
        "G": G,
        "prompts": n_prompts,
        "negative_group_ratio": neg.float().mean().item(),
        "mixed_group_ratio": mixed.float().mean().item(),
        "all_correct_group_ratio": (kind == 2).float().mean().item(),
        "mean_abs_adv_negative": absA[neg].mean().item() if neg.any() else None,
        "mean_abs_adv_mixed": absA[mixed].mean().item() if mixed.any() else None,
        "bound_mean_abs_adv_negative": alpha / (2 * G),
        "negative_share_of_abs_adv": (absA[neg].sum() / absA.sum()).item(),
        "grad_norm_negative": g_neg.norm().item(),
        "grad_norm_mixed": g_mix.norm().item(),
        "grad_norm_total": total.norm().item(),
        "negative_share_of_grad_norm": (g_neg.norm() / total.norm()).item(),
        "cosine_negative_mixed": torch.nn.functional.cosine_similarity(g_neg, g_mix, dim=0).item(),
        "pbar_negative_std_median": statistics.median(s for s, _ in spreads) if spreads else None,
        "pbar_negative_range_median": statistics.median(r for _, r in spreads) if spreads else None,
        "pbar_mean": pbar.mean().item(),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/negative_groups")
    p.add_argument("--prompts", type=int, default=64, help="training prompts (default 64)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import torch

    from lens_openrlhf.demo import setups
    from lens_openrlhf.data.files import read_jsonl

    torch.set_num_threads(1)
    out = Path(a.out).resolve()
    setup = replace(setups.ANSWERS)
    inputs = setups.prepare(setup, out, log=lambda m: print("  " + m, flush=True))
    rows = read_jsonl(inputs.train)
    rows = [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(a.seed))[: a.prompts]]
    results = []
    for G in (8, 16):
        model, seqs, attention, mask, P, rewards = sample(inputs.model, rows, G, setup.max_new_tokens, a.seed)
        for alpha in (0.25, 1.0):
            r = measure(model, seqs, attention, mask, P, rewards, alpha)
            results.append(r)
            print(
                f"G {G:2d} alpha {alpha:4.2f}: groups neg {r['negative_group_ratio']:.2f} mixed "
                f"{r['mixed_group_ratio']:.2f}; mean |A| neg {r['mean_abs_adv_negative']:.4f} (bound alpha/2G "
                f"{r['bound_mean_abs_adv_negative']:.4f}) mixed {r['mean_abs_adv_mixed']:.3f}; share of sum|A| "
                f"{r['negative_share_of_abs_adv']:.4f}; grad norm neg/total {r['negative_share_of_grad_norm']:.4f} "
                f"(cos neg,mixed {r['cosine_negative_mixed']:+.3f}); pbar in neg groups: std "
                f"{r['pbar_negative_std_median']:.3f}, range {r['pbar_negative_range_median']:.3f} (medians)",
                flush=True,
            )
    (out / "report.json").write_text(json.dumps({"model": str(inputs.model), "results": results}, indent=1))
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
