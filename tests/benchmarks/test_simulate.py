"""The LENS paper's claims as checks, measured in ``benchmarks/simulate.py`` (small configuration).

Every number asserted here is measured by training tabular policies with the estimators of
``lens_openrlhf.estimators`` on paired seeds; nothing is hard-coded but the pass criteria. Runs
about a minute on 2 CPU cores (two module-scoped fixtures, one per task).

Claims and where they hold in this simulator (figures: default run, 8 seeds; seeds 0-5 are these):

* LENS beats GRPO on hard questions in nearly every seed: yes on ``arithmetic`` (multi-token answers,
  8/8 seeds, hard-accuracy AUC +0.020 on 0.116); NOT on the one-token ``bandit`` (5/8 seeds,
  +0.012 on 0.254, per-seed spread about +-0.02). There the claim is replaced by its mechanism,
  which does hold: every hard question GRPO never solves stays exactly at its prior under GRPO, while
  LENS's negative groups raise its correct-answer probability.
* ``lens_negative_only`` keeps most of LENS's gain (Table 2): yes on ``arithmetic`` (about 70%).
* NSR / W-REINFORCE hold pass@16 at least as well as PSR (seed 003): yes on ``arithmetic`` in every
  seed; reversed on ``bandit`` (PSR ahead in 8/8 seeds). In a tabular softmax PSR, NSR and
  W-REINFORCE have the same expected gradient, grad E[r] (times 1 + lam for W-REINFORCE): the
  arithmetic gap comes from GRPO's per-response token mean, which pushes short wrong answers down
  harder (with ``loss_norm="constant"`` NSR and PSR end equal, see the last test). PSR does not
  "hurt large k" here either: its pass@16 rises above the prior's on both tasks.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "simulate.py"


def _load_simulate():
    spec = importlib.util.spec_from_file_location("lens_benchmarks_simulate", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


sim = _load_simulate()

SEEDS = list(range(6))
#: An arm "beats" a baseline when its hard-question accuracy AUC is higher in all seeds but at most one
#: AND higher by at least half a point of accuracy on average (the paper's MATH gains: 1.5-3 points).
MIN_GAIN = 0.005


def beats(auc: torch.Tensor, base_auc: torch.Tensor) -> bool:
    """The claim check on paired per-seed AUCs ``[n_seeds]`` of an arm and of the baseline."""
    wins = sim.paired_wins(auc, base_auc)
    return wins >= len(auc) - 1 and float((auc - base_auc).mean()) >= MIN_GAIN


def _hard_auc(result, label):
    task = result["task"]
    return sim.accuracy_auc(result["arms"][label], result["levels"], len(task.level_names) - 1)


def _pass16(result, label):
    return sim.final_pass_at_k(result["arms"][label], result["levels"], -1, ks=(16,))[:, 0]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def arithmetic():
    """Multi-token task, the default configuration on seeds 0-5 (the default run's first seeds)."""
    arms = [
        sim.Arm("grpo", "grpo"),
        sim.Arm("lens", "lens"),
        sim.Arm("lens_negative_only", "lens_negative_only"),
        sim.Arm("lens_alpha0", "lens", {"alpha": 0.0}),  # broken LENS: negative groups switched off
        sim.Arm("psr", "psr"),
        sim.Arm("nsr", "nsr"),
        sim.Arm("w_reinforce", "w_reinforce"),
    ]
    return sim.run_task("arithmetic", SEEDS, arms, sim.TrainConfig())


@pytest.fixture(scope="module")
def bandit():
    """Section 4.1 bandit, the default configuration on seeds 0-5."""
    arms = [
        sim.Arm("grpo", "grpo"),
        sim.Arm("lens", "lens"),
        sim.Arm("lens_alpha0", "lens", {"alpha": 0.0}),
        sim.Arm("psr", "psr"),
        sim.Arm("nsr", "nsr"),
    ]
    return sim.run_task("bandit", SEEDS, arms, sim.TrainConfig())


# ---------------------------------------------------------------------------------------------------
# The simulator itself
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bandit", "arithmetic"])
def test_exact_accuracy_matches_sampling(name):
    """p_correct (exact) agrees with the sampled reward rate, and pi_old log-probs are re-computable."""
    task = (
        sim.make_bandit_task(sim.BanditConfig(), 0)
        if name == "bandit"
        else sim.make_arithmetic_task(sim.ArithmeticConfig(), 0)
    )
    n_samples = 3000
    gen = torch.Generator().manual_seed(1)
    uniforms = torch.rand(task.n_questions, n_samples, task.max_len, generator=gen)
    ro = sim.sample(task, task.prior_logits, uniforms)
    p = sim.p_correct(task, task.prior_logits)
    se = (p * (1 - p) / n_samples).sqrt()
    assert ((ro.rewards.mean(1) - p).abs() <= 5 * se + 1e-3).all()
    lp = sim.token_log_probs(task.prior_logits, ro.nodes, ro.tokens)
    torch.testing.assert_close(lp, ro.old_log_probs)
    # LENS needs the mean token log-prob: equal to log pi(o) / |o|
    torch.testing.assert_close(ro.mean_log_probs, ro.old_log_probs.sum(-1) / ro.lengths)


def test_hard_questions_are_confidently_wrong():
    """The prior: hard questions are mostly negative groups at G = 16, easy ones rarely."""
    task = sim.make_bandit_task(sim.BanditConfig(), 0)
    p16 = sim.pass_at_k(sim.p_correct(task, task.prior_logits), (16,))[:, 0]
    assert float(p16[task.level == 1].mean()) < 0.15 < 0.95 < float(p16[task.level == 0].min())
    hard_probs = task.prior_logits[task.level == 1, 0].softmax(-1)
    assert float(hard_probs.topk(2, -1).values.sum(-1).median()) > 0.5  # two wrong answers hold most


def test_runs_are_deterministic_and_paired():
    task = sim.make_bandit_task(sim.BanditConfig(n_easy=4, n_hard=4), 3)
    cfg = sim.TrainConfig(steps=20)
    a = sim.train(task, sim.Arm("lens", "lens"), 3, cfg)
    b = sim.train(task, sim.Arm("lens", "lens"), 3, cfg)
    assert torch.equal(a.p_correct, b.p_correct)


# ---------------------------------------------------------------------------------------------------
# The paper's claims
# ---------------------------------------------------------------------------------------------------
def test_lens_beats_grpo_on_hard_questions(arithmetic):
    lens, grpo = _hard_auc(arithmetic, "lens"), _hard_auc(arithmetic, "grpo")
    assert beats(lens, grpo), f"LENS {lens.tolist()} vs GRPO {grpo.tolist()}"


def test_lens_uses_negative_groups(arithmetic):
    """GRPO gives every negative group zero advantage; LENS gives (almost) every sample one."""
    neg = torch.stack([c.negative_group_ratio for c in arithmetic["arms"]["grpo"]]).mean()
    nonzero_grpo = torch.stack([c.nonzero_adv_frac for c in arithmetic["arms"]["grpo"]]).mean()
    nonzero_lens = torch.stack([c.nonzero_adv_frac for c in arithmetic["arms"]["lens"]]).mean()
    assert float(neg) > 0.15  # the setting has negative groups to rescue
    assert float(nonzero_grpo) <= 1 - float(neg) + 1e-6
    assert float(nonzero_lens) > float(nonzero_grpo) + 0.5 * float(neg)


def test_negative_only_keeps_most_of_the_gain(arithmetic):
    """Table 2: 'LENS with only negative groups' keeps most of the improvement over GRPO."""
    grpo = _hard_auc(arithmetic, "grpo")
    gain_lens = float((_hard_auc(arithmetic, "lens") - grpo).mean())
    gain_neg = float((_hard_auc(arithmetic, "lens_negative_only") - grpo).mean())
    assert gain_lens > 0
    assert gain_neg >= 0.5 * gain_lens, f"negative-only gain {gain_neg:.4f} vs LENS {gain_lens:.4f}"
    assert beats(_hard_auc(arithmetic, "lens_negative_only"), grpo)


def test_negative_reinforcement_holds_pass_at_16(arithmetic):
    """Seed 003: NSR and W-REINFORCE hold pass@16 at least as well as PSR (every seed, arithmetic).

    Caveat (see the last test): here the gap comes from GRPO's per-response token mean (short wrong
    answers are pushed down harder), not from PSR narrowing: PSR's pass@16 still rises above the
    prior's, it just learns the hard questions far more slowly.
    """
    psr = _pass16(arithmetic, "psr")
    for label in ("nsr", "w_reinforce"):
        other = _pass16(arithmetic, label)
        assert (other >= psr).all(), f"{label} {other.tolist()} vs PSR {psr.tolist()}"
    # seed 003's "PSR narrows and hurts large k" does not reproduce: PSR ends above the prior
    prior = sim.pass_at_k_curve(arithmetic["arms"]["psr"], arithmetic["levels"], -1, ks=(16,))[:, 0, 0]
    assert (psr >= prior).all()


def test_broken_lens_fails_the_check(arithmetic):
    """The checks can fail: GRPO in place of LENS, or LENS with alpha = 0, shows no negative-group gain."""
    grpo = _hard_auc(arithmetic, "grpo")
    assert not beats(grpo, grpo)
    alpha0 = _hard_auc(arithmetic, "lens_alpha0")
    assert not beats(alpha0, grpo), f"alpha=0 {alpha0.tolist()} vs GRPO {grpo.tolist()}"
    gain_lens = float((_hard_auc(arithmetic, "lens") - grpo).mean())
    assert float((alpha0 - grpo).mean()) < 0.25 * gain_lens
    # alpha = 0 really switches negative groups off: no more non-zero advantages than GRPO
    nz = lambda label: torch.stack([c.nonzero_adv_frac for c in arithmetic["arms"][label]]).mean()
    assert float(nz("lens_alpha0")) <= float(nz("grpo")) + 0.01


def test_bandit_negative_groups_move_mass_to_the_correct_answer(bandit):
    """Section 4.1 bandit. The AUC claim does not reproduce here (LENS won 4 of these 6 seeds; the
    gain is small next to the luck of GRPO's first correct sample), but its mechanism does: a hard
    question that GRPO never solves never moves from its prior, while under LENS, which sees the very
    same random numbers, its correct answer gains probability. alpha = 0 removes that."""
    raised = total = 0
    for seed, g, lens, a0 in zip(SEEDS, *(bandit["arms"][k] for k in ("grpo", "lens", "lens_alpha0"))):
        task = sim.make_bandit_task(sim.BanditConfig(), seed)
        prior = sim.p_correct(task, task.prior_logits)
        stuck = g.p_correct[-1] == prior  # GRPO: no mixed group in 200 steps, hence no gradient
        total += int(stuck.sum())
        raised += int((lens.p_correct[-1][stuck] > prior[stuck] * 1.01).sum())
        torch.testing.assert_close(a0.p_correct[-1][stuck], prior[stuck])
    assert total >= 10, "the configuration must leave GRPO some unsolved hard questions"
    assert raised >= total - 1, f"LENS raised {raised} of {total} questions GRPO never solved"


def test_bandit_psr_vs_nsr_does_not_reproduce(bandit):
    """Seed 003's pass@16 claim does NOT reproduce in the bandit: PSR ends ahead of NSR.

    With one token per answer and no shared parameters, PSR and NSR follow the same expected gradient
    grad E[r]; NSR's extra noise on the wrong answers' logits sharpens them and costs the rare correct
    answer. Asserted as measured, so that a change in behaviour is noticed."""
    psr, nsr = _pass16(bandit, "psr"), _pass16(bandit, "nsr")
    assert float(nsr.mean()) <= float(psr.mean())


def test_arithmetic_nsr_gap_is_length_normalisation():
    """Why NSR > PSR in arithmetic: with Dr. GRPO's constant normaliser instead of GRPO's 1/|o|,
    NSR, PSR and W-REINFORCE (same expected gradient in a tabular policy) end at the same pass@16."""
    cfg = sim.TrainConfig(loss_norm="constant")
    arms = [sim.Arm(k, k) for k in ("psr", "nsr", "w_reinforce")]
    result = sim.run_task("arithmetic", SEEDS[:2], arms, cfg)
    psr = float(_pass16(result, "psr").mean())
    for label in ("nsr", "w_reinforce"):
        assert abs(float(_pass16(result, label).mean()) - psr) < 0.02
