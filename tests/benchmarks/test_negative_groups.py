"""benchmarks/negative_groups.py's measurement on a random tiny model: the split of the LENS gradient by group kind adds
up, the negative groups' |advantage| respects the alpha/(2G) bound, and alpha scales their part exactly."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import negative_groups as NG  # noqa: E402


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from lens_openrlhf.localrun.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("ng") / "model", seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    n_prompts, G, P, T = 6, 8, 5, 7
    prompts = torch.randint(5, 200, (n_prompts, P), generator=g).repeat_interleave(G, 0)
    seqs = torch.cat([prompts, torch.randint(5, 200, (n_prompts * G, T), generator=g)], 1)
    mask = torch.ones(n_prompts * G, T, dtype=torch.bool)
    mask[::3, -2:] = False  # some shorter responses
    attention = torch.cat([torch.ones(n_prompts * G, P, dtype=torch.long), mask.long()], 1)
    rewards = torch.zeros(n_prompts, G)
    rewards[2, :3] = 1  # mixed
    rewards[3, 5] = 1  # mixed
    rewards[4] = 1  # all correct; groups 0, 1, 5 all incorrect
    return model, seqs, attention, mask, P, rewards


def test_the_split_adds_up_and_respects_the_bound(batch):
    r = NG.measure(*batch, alpha=0.25)
    assert r["negative_group_ratio"] == pytest.approx(0.5) and r["mixed_group_ratio"] == pytest.approx(2 / 6)
    assert 0 < r["mean_abs_adv_negative"] <= r["bound_mean_abs_adv_negative"] == 0.25 / 16
    assert 0 < r["negative_share_of_abs_adv"] < 1 and 0 < r["negative_share_of_grad_norm"]
    # total = negative + mixed: the triangle inequality both ways
    n, m, t = r["grad_norm_negative"], r["grad_norm_mixed"], r["grad_norm_total"]
    assert abs(n - m) - 1e-6 <= t <= n + m + 1e-6
    assert t**2 == pytest.approx(n**2 + m**2 + 2 * n * m * r["cosine_negative_mixed"], rel=1e-4)


def test_alpha_scales_only_the_negative_part(batch):
    a, b = NG.measure(*batch, alpha=0.25), NG.measure(*batch, alpha=1.0)
    assert b["mean_abs_adv_negative"] == pytest.approx(4 * a["mean_abs_adv_negative"], rel=1e-5)
    assert b["grad_norm_negative"] == pytest.approx(4 * a["grad_norm_negative"], rel=1e-4)
    assert b["grad_norm_mixed"] == pytest.approx(a["grad_norm_mixed"], rel=1e-5)
    assert b["mean_abs_adv_mixed"] == pytest.approx(a["mean_abs_adv_mixed"], rel=1e-6)
