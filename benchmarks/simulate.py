"""Does LENS learn from negative groups? A simulator of RLVR on synthetic verifiable tasks.

Every estimator of ``lens_openrlhf.estimators.ADV_ESTIMATORS`` trains the same tabular policy with
ONE update rule: the GRPO / PPO-clip surrogate on the advantages that ``group_advantages`` returns,
the same learning rate, and (given a seed) the same random numbers. Only the advantages differ.

Two tasks (section 1), both "trees" of tokens with one table of logits per (question, prefix):

* ``bandit``: the multiple-choice example of the LENS paper (arXiv 2510.08696, section 4.1). One
  token = one of K answers. Easy questions have a reasonable prior; hard ones a confidently wrong
  prior (most mass on a few incorrect answers, the correct answer with prior 1e-4 to 1e-2).
* ``arithmetic``: two-digit additions answered digit by digit (tokens 0-9 and EOS, up to 4 tokens),
  so responses have different lengths and LENS's length-normalised pbar = pi^(1/|o|) matters. The
  prior is a "student who drops carries": each carry of the sum is forgotten with probability
  ``drop_carry``; the level of a question is its number of carries (0 easy, 1 medium, 2 hard).

Section 2 samples from and scores a tabular tree policy; section 3 is the training loop; section 4
the summaries (accuracy area under curve, pass@k, negative-group ratio); section 5 the JSON, the
plot and the table; section 6 the CLI.

Accuracy and pass@k are exact, not sampled: p(q) = sum over correct answers of the product of the
policy's conditionals along their paths, pass@k(q) = 1 - (1 - p(q))^k, averaged over questions.

Run: ``python benchmarks/simulate.py`` (default: both tasks, 8 paired seeds, a few minutes on 2 CPU
cores); ``--help`` for the knobs. Writes ``results.json`` and ``curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script from anywhere, or imported by file path
    sys.path.insert(0, str(_REPO))

from lens_openrlhf.estimators import ADV_ESTIMATORS, group_advantages, group_statistics  # noqa: E402

PAD = -1  #: token id of "no token" (after the end of a response) and "no node" (after a leaf)
KS = (1, 2, 4, 8, 16)  #: the paper's pass@k


# ---------------------------------------------------------------------------------------------------
# 1. Tasks: a tree of tokens, a prior over it, and the correct answers
# ---------------------------------------------------------------------------------------------------
@dataclass
class TreeTask:
    """A verifiable task whose responses are paths in a token tree shared by all questions.

    Node 0 is the root (empty prefix). Emitting token ``v`` at node ``s`` leads to
    ``next_node[s, v]``, or ends the response when that is ``PAD``. Shapes (n = questions,
    S = nodes, V = vocabulary, C = most correct answers of a question, T = most tokens of a response):

    prior_logits:   ``[n, S, V]`` float32, the initial policy: one softmax per (question, node).
    next_node:      ``[S, V]`` int64, the tree.
    correct_tokens: ``[n, C, T]`` int64, the correct responses, ``PAD`` after their end and in unused
                    answer slots.
    correct_nodes:  ``[n, C, T]`` int64, the node each of those tokens is emitted at (``PAD`` likewise).
    level:          ``[n]`` int64, index into ``level_names`` (the last level is the hardest).
    """

    name: str
    prior_logits: Tensor
    next_node: Tensor
    correct_tokens: Tensor
    correct_nodes: Tensor
    level: Tensor
    level_names: Tuple[str, ...]
    description: str = ""

    @property
    def max_len(self) -> int:
        return self.correct_tokens.shape[-1]

    @property
    def n_questions(self) -> int:
        return self.prior_logits.shape[0]


def _paths_to_nodes(next_node: Tensor, tokens: Tensor) -> Tensor:
    """Nodes at which each token of ``tokens`` ``[..., T]`` (``PAD``-terminated) is emitted."""
    nodes = torch.full_like(tokens, PAD)
    node = torch.zeros(tokens.shape[:-1], dtype=torch.long)
    for t in range(tokens.shape[-1]):
        live = tokens[..., t] != PAD
        nodes[..., t] = torch.where(live, node, torch.full_like(node, PAD))
        node = torch.where(live, next_node[node.clamp(min=0), tokens[..., t].clamp(min=0)], node)
    return nodes


@dataclass
class BanditConfig:
    """Multiple-choice bandit (LENS paper, section 4.1).

    Easy questions: ``n_correct_easy`` correct answers sharing prior mass U(easy_mass); the wrong mass
    spread by a flat Dirichlet. Hard questions: one correct answer with prior mass log-uniform in
    ``hard_mass`` and the wrong mass spread by a Dirichlet(``wrong_concentration``) < 1, which puts
    most of it on a few wrong answers (confidently wrong: in the median hard question the top two
    wrong answers hold 60% of the mass, the top one 36%).
    """

    n_easy: int = 32
    n_hard: int = 32
    n_answers: int = 10
    n_correct_easy: int = 2
    easy_mass: Tuple[float, float] = (0.2, 0.6)
    hard_mass: Tuple[float, float] = (1e-4, 1e-2)
    wrong_concentration: float = 0.5


def make_bandit_task(cfg: BanditConfig, seed: int) -> TreeTask:
    """A ``TreeTask`` with one node (the question) and ``n_answers`` tokens (the answers), T = 1."""
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    n, K = cfg.n_easy + cfg.n_hard, cfg.n_answers
    probs = torch.zeros(n, K, dtype=torch.float64)
    correct = torch.full((n, max(cfg.n_correct_easy, 1), 1), PAD, dtype=torch.long)
    level = torch.zeros(n, dtype=torch.long)
    for q in range(n):
        hard = q >= cfg.n_easy
        n_correct = 1 if hard else cfg.n_correct_easy
        perm = torch.randperm(K, generator=g)
        right, wrong = perm[:n_correct], perm[n_correct:]
        u = torch.rand((), generator=g, dtype=torch.float64)
        if hard:
            lo, hi = (math.log(m) for m in cfg.hard_mass)
            mass = math.exp(lo + (hi - lo) * float(u))
            conc = cfg.wrong_concentration
        else:
            lo, hi = cfg.easy_mass
            mass = lo + (hi - lo) * float(u)
            conc = 1.0
        probs[q, right] = mass / n_correct
        gam = torch._standard_gamma(torch.full((K - n_correct,), conc, dtype=torch.float64), generator=g)
        probs[q, wrong] = (1.0 - mass) * gam / gam.sum()
        correct[q, :n_correct, 0] = right
        level[q] = int(hard)
    next_node = torch.full((1, K), PAD, dtype=torch.long)
    return TreeTask(
        name="bandit",
        prior_logits=probs.clamp(min=1e-12).log().to(torch.float32).unsqueeze(1),
        next_node=next_node,
        correct_tokens=correct,
        correct_nodes=torch.where(correct == PAD, correct, torch.zeros_like(correct)),
        level=level,
        level_names=("easy", "hard"),
        description=f"{n} questions x {K} answers, one token each",
    )


@dataclass
class ArithmeticConfig:
    """Two-digit additions a + b (10 <= a, b <= 99) answered digit by digit, then EOS.

    Level = number of carries (0, 1, 2). The prior is a student who forgets each carry with
    probability ``drop_carry`` (58 + 55 = 113: "3" with probability 0.9025, "13" and "103" 0.0475
    each, "113" 0.0025, before slips), and whose last digit slips by +-1 with probability ``slip``.
    Every node mixes that distribution with a uniform one of weight ``noise``, so every response has
    some probability. A response of more
    than ``max_digits`` digits is cut there (no EOS; it is wrong).
    """

    n_per_level: int = 8
    drop_carry: float = 0.95
    slip: float = 0.1
    noise: float = 0.02
    max_digits: int = 3


EOS = 10  #: token id of end-of-answer in the arithmetic task (digits are 0-9)


def _digit_tree(max_digits: int) -> Tuple[Tensor, List[int]]:
    """``next_node [S, 11]`` of all digit strings of up to ``max_digits`` digits, and the node offsets.

    The node of prefix d_1..d_j is ``offset[j] + int(d_1..d_j)`` (leading zeros kept distinct by
    the offset of each depth and the integer value within it, since all prefixes of one depth have
    the same number of digits). At depth ``max_digits`` every token ends the response.
    """
    offsets = [0]
    for j in range(max_digits):
        offsets.append(offsets[-1] + 10**j)
    n_nodes = offsets[-1] + 10**max_digits
    next_node = torch.full((n_nodes, 11), PAD, dtype=torch.long)
    for j in range(max_digits):
        idx = torch.arange(10**j)
        for d in range(10):
            next_node[offsets[j] + idx, d] = offsets[j + 1] + 10 * idx + d
    return next_node, offsets


def _carries(a: int, b: int) -> Tuple[int, int]:
    c1 = int(a % 10 + b % 10 >= 10)
    c2 = int(a // 10 + b // 10 + c1 >= 10)
    return c1, c2


def _student_answers(a: int, b: int, cfg: ArithmeticConfig) -> Dict[int, float]:
    """The carry-dropping student's distribution over numeric answers to a + b (before noise).

    Column by column: whenever a column's sum reaches 10, the student forgets the carry with
    probability ``drop_carry``; then the last digit slips by -1 or +1 with probability ``slip`` / 2 each.
    """
    paths = [(0, 0, 1.0)]  # (value so far from the finished columns, carry into the next column, weight)
    for col in range(2):
        nxt = []
        for value, carry, w in paths:
            s = (a // 10**col) % 10 + (b // 10**col) % 10 + carry
            value += (s % 10) * 10**col
            if s >= 10:
                nxt += [(value, 1, w * (1 - cfg.drop_carry)), (value, 0, w * cfg.drop_carry)]
            else:
                nxt.append((value, 0, w))
        paths = nxt
    out: Dict[int, float] = {}
    for value, carry, w in paths:
        base = value + 100 * carry
        for delta, wd in ((0, 1 - cfg.slip), (-1, cfg.slip / 2), (1, cfg.slip / 2)):
            ans = base + delta
            if ans >= 0 and (delta == 0 or ans // 10 == base // 10):  # a slip keeps the tens
                out[ans] = out.get(ans, 0.0) + w * wd
    total = sum(out.values())
    return {k: v / total for k, v in out.items()}


def make_arithmetic_task(cfg: ArithmeticConfig, seed: int) -> TreeTask:
    """A ``TreeTask`` of ``3 * n_per_level`` additions; T = max_digits + 1 tokens."""
    g = torch.Generator().manual_seed(10_007 * seed + 2)
    next_node, offsets = _digit_tree(cfg.max_digits)
    next_node[:, EOS] = PAD
    S, V, T = next_node.shape[0], 11, cfg.max_digits + 1
    questions: List[Tuple[int, int, int]] = []
    for lvl in range(3):
        while sum(1 for *_, l in questions if l == lvl) < cfg.n_per_level:
            a, b = (int(x) for x in torch.randint(10, 100, (2,), generator=g))
            if sum(_carries(a, b)) == lvl and a + b < 10**cfg.max_digits:
                questions.append((a, b, lvl))
    n = len(questions)
    logits = torch.zeros(n, S, V)
    correct = torch.full((n, 1, T), PAD, dtype=torch.long)
    for q, (a, b, _) in enumerate(questions):
        mass = torch.zeros(S, V, dtype=torch.float64)  # student's mass of each (node, next token)
        for ans, w in _student_answers(a, b, cfg).items():
            digits = [int(c) for c in str(ans)]
            node = 0
            for d in digits + [EOS]:
                mass[node, d] += w
                if d != EOS:
                    node = int(next_node[node, d])
        seen = mass.sum(-1, keepdim=True)
        cond = torch.where(seen > 0, mass / seen.clamp(min=1e-300), torch.full_like(mass, 1.0 / V))
        cond = (1 - cfg.noise) * cond + cfg.noise / V
        logits[q] = cond.log().to(torch.float32)
        correct[q, 0, : len(str(a + b)) + 1] = torch.tensor([int(c) for c in str(a + b)] + [EOS])
    nodes = _paths_to_nodes(next_node, correct)
    return TreeTask(
        name="arithmetic",
        prior_logits=logits,
        next_node=next_node,
        correct_tokens=correct,
        correct_nodes=nodes,
        level=torch.tensor([l for *_, l in questions]),
        level_names=("easy", "medium", "hard"),
        description=f"{n} additions a+b (a, b in 10..99), answers of 1-{cfg.max_digits} digits + EOS, "
        f"{S} nodes x {V} tokens per question",
    )


# ---------------------------------------------------------------------------------------------------
# 2. The tabular tree policy: sampling, log-probs, exact accuracy
# ---------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """G sampled responses per question. Shapes ``[n, G, T]`` unless noted.

    tokens: the sampled tokens, ``PAD`` after the end. nodes: where each was emitted (``PAD`` after
    the end). mask: bool, True on response tokens. old_log_probs: float32, log pi_old of each token
    (0 off the mask). rewards: ``[n, G]`` float32 in {0, 1}. lengths: ``[n, G]`` float32 tokens.
    mean_log_probs: ``[n, G]`` float32, the mean token log-prob (LENS's log pbar).
    """

    tokens: Tensor
    nodes: Tensor
    mask: Tensor
    old_log_probs: Tensor
    rewards: Tensor
    lengths: Tensor
    mean_log_probs: Tensor


def sample(task: TreeTask, logits: Tensor, uniforms: Tensor) -> Rollout:
    """Sample by inverse CDF: token t of response (q, i) is the first v with cdf(v) > uniforms[q, i, t].

    Args:
        logits: ``[n, S, V]`` the current policy (pi_old for this step).
        uniforms: ``[n, G, T]`` in [0, 1). Drawing them from one seeded generator for every estimator
            gives paired (common-random-number) runs: two policies that differ a little sample the
            same responses most of the time.
    """
    n, G, T = uniforms.shape
    with torch.no_grad():
        logits = logits.float()
        q_idx = torch.arange(n).unsqueeze(1).expand(n, G)
        node = torch.zeros(n, G, dtype=torch.long)
        alive = torch.ones(n, G, dtype=torch.bool)
        tokens = torch.full((n, G, T), PAD, dtype=torch.long)
        nodes = torch.full((n, G, T), PAD, dtype=torch.long)
        old = torch.zeros(n, G, T)
        for t in range(T):
            lp = torch.log_softmax(logits[q_idx, node], dim=-1)  # [n, G, V]
            cdf = lp.exp().cumsum(-1)
            tok = (cdf <= uniforms[..., t : t + 1]).sum(-1).clamp(max=lp.shape[-1] - 1)
            tokens[..., t] = torch.where(alive, tok, tokens[..., t])
            nodes[..., t] = torch.where(alive, node, nodes[..., t])
            old[..., t] = torch.where(alive, lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1), old[..., t])
            nxt = task.next_node[node, tok]
            alive = alive & (nxt != PAD)
            node = nxt.clamp(min=0)
        mask = tokens != PAD
        lengths = mask.sum(-1).float()
        mean_lp = old.sum(-1) / lengths.clamp(min=1)
        rewards = rewards_of(task, tokens)
    return Rollout(tokens, nodes, mask, old, rewards, lengths, mean_lp)


def rewards_of(task: TreeTask, tokens: Tensor) -> Tensor:
    """``[n, G]`` float32: 1 where the response ``tokens [n, G, T]`` equals one of the correct ones."""
    ref = task.correct_tokens  # [n, C, T]
    valid = ref[..., 0] != PAD  # [n, C]
    same = (tokens.unsqueeze(2) == ref.unsqueeze(1)).all(-1) & valid.unsqueeze(1)  # [n, G, C]
    return same.any(-1).float()


def token_log_probs(logits: Tensor, nodes: Tensor, tokens: Tensor) -> Tensor:
    """``[n, G, T]`` log pi(token | node) under ``logits [n, S, V]`` (0 where ``tokens`` is PAD)."""
    n = logits.shape[0]
    q_idx = torch.arange(n).view(n, *([1] * (nodes.dim() - 1))).expand_as(nodes)
    rows = torch.log_softmax(logits[q_idx, nodes.clamp(min=0)], dim=-1)  # [n, G, T, V]: visited nodes only
    lp = rows.gather(-1, tokens.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(tokens != PAD, lp, torch.zeros_like(lp))


def p_correct(task: TreeTask, logits: Tensor) -> Tensor:
    """``[n]`` exact probability that the policy answers each question correctly."""
    with torch.no_grad():
        lp = token_log_probs(logits.float(), task.correct_nodes, task.correct_tokens).sum(-1)  # [n, C]
        valid = task.correct_tokens[..., 0] != PAD
        return torch.where(valid, lp.exp(), torch.zeros_like(lp)).sum(-1).clamp(max=1.0)


def pass_at_k(p: Tensor, ks: Sequence[int] = KS) -> Tensor:
    """``[..., len(ks)]`` exact pass@k = 1 - (1 - p)^k of per-question success probabilities ``p``."""
    k = torch.tensor(ks, dtype=p.dtype)
    return 1.0 - (1.0 - p.unsqueeze(-1)).clamp(min=0.0) ** k


# ---------------------------------------------------------------------------------------------------
# 3. Training: one update rule for every estimator
# ---------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """The update rule shared by every estimator.

    Per step: G responses per question from pi_old (the current policy), advantages from
    ``group_advantages``, then ``ppo_epochs`` gradient steps on the GRPO / PPO-clip loss

        loss = sum_q (1/G) sum_i (1/|o_i|) sum_t -min(rho A_i, clip(rho, 1-eps, 1+eps) A_i),
        rho = pi(o_it) / pi_old(o_it).

    The loss is summed over questions (mean over a group, token mean within a response): a table of
    logits per question then gets the same step size however many questions there are. Plain SGD by
    default: Adam would rescale every question's logits by its own gradient history, undoing the very
    weights (alpha, 1/G, pbar/(D - pbar)) that tell the estimators apart. With a tabular policy the
    paper's minibatches of distinct prompts touch disjoint logits, so one on-policy epoch per
    rollout (rho = 1 at the gradient) is the faithful translation of its 4 off-policy updates.
    """

    steps: int = 200
    group_size: int = 16
    lr: float = 1.0
    clip_eps: float = 0.2
    ppo_epochs: int = 1
    optimizer: str = "sgd"
    eval_every: int = 5
    #: "response": (1/|o_i|) sum_t, GRPO's loss; "constant": (1/T) sum_t, Dr. GRPO's (no length bias)
    loss_norm: str = "response"


@dataclass
class Arm:
    """One estimator run: a label, a registered estimator name and its options."""

    label: str
    estimator: str
    options: Dict[str, float] = field(default_factory=dict)


def default_arms() -> List[Arm]:
    """Every registered estimator with its registry defaults (alpha = 0.25, lam = 0.1, gamma = 1.05)."""
    return [Arm(name, name) for name in ADV_ESTIMATORS]


@dataclass
class RunCurves:
    """What one (arm, seed) run records. E = evaluations (step 0, every ``eval_every``, the last).

    eval_steps: ``[E]``. p_correct: ``[E, n]`` exact per-question success probability.
    negative_group_ratio, nonzero_adv_frac: ``[steps]`` per training step.
    """

    eval_steps: Tensor
    p_correct: Tensor
    negative_group_ratio: Tensor
    nonzero_adv_frac: Tensor


def train(task: TreeTask, arm: Arm, seed: int, cfg: TrainConfig) -> RunCurves:
    """Train the tabular policy of ``task`` from its prior with ``arm``'s advantages; deterministic.

    The uniforms of step s come from a generator seeded by ``seed`` only, so every arm sees the same
    random numbers (paired runs).
    """
    logits = task.prior_logits.clone().requires_grad_(True)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD([logits], lr=cfg.lr)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam([logits], lr=cfg.lr)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd or adam)")
    if cfg.loss_norm not in ("response", "constant"):
        raise ValueError(f"unknown loss_norm {cfg.loss_norm!r} (response or constant)")
    gen = torch.Generator().manual_seed(7919 * seed + 3)
    n, G, T = task.n_questions, cfg.group_size, task.max_len
    eval_steps = sorted(set(range(0, cfg.steps, cfg.eval_every)) | {cfg.steps})
    evals, neg, nonzero = [], torch.zeros(cfg.steps), torch.zeros(cfg.steps)
    for step in range(cfg.steps + 1):
        if step in eval_steps:
            evals.append(p_correct(task, logits))
        if step == cfg.steps:
            break
        uniforms = torch.rand(n, G, T, generator=gen)
        ro = sample(task, logits.detach(), uniforms)
        adv = group_advantages(arm.estimator, ro.rewards, ro.mean_log_probs, response_lengths=ro.lengths, **arm.options)
        stats = group_statistics(ro.rewards, adv)
        neg[step], nonzero[step] = stats["negative_group_ratio"], stats["nonzero_adv_frac"]
        a = adv.unsqueeze(-1)  # [n, G, 1]: every token of a response gets its advantage
        for _ in range(cfg.ppo_epochs):
            ratio = torch.exp(token_log_probs(logits, ro.nodes, ro.tokens) - ro.old_log_probs)
            surr = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
            norm = ro.lengths.clamp(min=1) if cfg.loss_norm == "response" else float(T)
            per_response = (surr * ro.mask).sum(-1) / norm  # [n, G]
            loss = -per_response.mean(-1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return RunCurves(torch.tensor(eval_steps), torch.stack(evals), neg, nonzero)


def run_task(
    task_name: str, seeds: Sequence[int], arms: Sequence[Arm], cfg: TrainConfig, task_cfg=None, verbose: bool = False
) -> Dict[str, object]:
    """Run every arm on every seed of one task (a fresh task instance per seed, shared by the arms).

    Returns ``{"task": TreeTask of seed[0], "levels": [n_seeds, n] per-seed question levels,
    "arms": {label: [RunCurves per seed]}}``.
    """
    makers = {"bandit": (make_bandit_task, BanditConfig), "arithmetic": (make_arithmetic_task, ArithmeticConfig)}
    make, cfg_cls = makers[task_name]
    task_cfg = task_cfg or cfg_cls()
    out: Dict[str, List[RunCurves]] = {arm.label: [] for arm in arms}
    levels, first = [], None
    for seed in seeds:
        task = make(task_cfg, seed)
        if first is None:
            first = task
        levels.append(task.level)
        for arm in arms:
            t0 = time.time()
            out[arm.label].append(train(task, arm, seed, cfg))
            if verbose:
                print(f"  {task_name} seed {seed} {arm.label:<20s} {time.time() - t0:5.1f} s", flush=True)
    return {"task": first, "task_config": task_cfg, "levels": torch.stack(levels), "arms": out}


# ---------------------------------------------------------------------------------------------------
# 4. Summaries
# ---------------------------------------------------------------------------------------------------
def level_accuracy(curves: Sequence[RunCurves], levels: Tensor, level: int) -> Tensor:
    """``[n_seeds, E]`` mean exact accuracy over the questions of ``level`` (``-1``: all questions)."""
    rows = []
    for c, lv in zip(curves, levels):
        sel = torch.ones_like(lv, dtype=torch.bool) if level < 0 else lv == level
        rows.append(c.p_correct[:, sel].mean(-1))
    return torch.stack(rows)


def accuracy_auc(curves: Sequence[RunCurves], levels: Tensor, level: int) -> Tensor:
    """``[n_seeds]`` area under the accuracy curve of ``level``, normalised to [0, 1] (trapezoid)."""
    acc = level_accuracy(curves, levels, level)
    steps = curves[0].eval_steps.to(acc.dtype)
    return torch.trapezoid(acc, steps, dim=-1) / (steps[-1] - steps[0])


def pass_at_k_curve(curves: Sequence[RunCurves], levels: Tensor, level: int = -1, ks: Sequence[int] = KS) -> Tensor:
    """``[n_seeds, E, len(ks)]`` exact pass@k at every evaluation, mean over the questions of ``level``."""
    rows = []
    for c, lv in zip(curves, levels):
        sel = torch.ones_like(lv, dtype=torch.bool) if level < 0 else lv == level
        rows.append(pass_at_k(c.p_correct[:, sel], ks).mean(1))
    return torch.stack(rows)


def final_pass_at_k(curves: Sequence[RunCurves], levels: Tensor, level: int = -1, ks: Sequence[int] = KS) -> Tensor:
    """``[n_seeds, len(ks)]`` pass@k of the final policy, mean over the questions of ``level``."""
    return pass_at_k_curve(curves, levels, level, ks)[:, -1]


def paired_wins(a: Tensor, b: Tensor) -> int:
    """Number of seeds where ``a`` is strictly above ``b`` (both ``[n_seeds]``, same seeds)."""
    return int((a > b).sum())


def summarize(result: Dict[str, object], baseline: str = "grpo") -> Dict[str, Dict[str, float]]:
    """Per arm, means over seeds: final accuracy per level, hardest-level AUC (and paired wins over
    ``baseline``), final pass@k of all questions and of the hardest level, negative-group ratio and
    non-zero-advantage fraction over training. A first row ``prior`` holds the initial policy's."""
    task, levels, arms = result["task"], result["levels"], result["arms"]
    hard = len(task.level_names) - 1
    base_auc = accuracy_auc(arms[baseline], levels, hard) if baseline in arms else None
    any_arm = next(iter(arms.values()))  # every arm starts from the same prior
    prior: Dict[str, float] = {}
    for i, name in enumerate(task.level_names):
        prior[f"acc_{name}"] = float(level_accuracy(any_arm, levels, i)[:, 0].mean())
    for k, v in zip(KS, pass_at_k_curve(any_arm, levels)[:, 0].mean(0)):
        prior[f"pass@{k}"] = float(v)
    for k, v in zip(KS, pass_at_k_curve(any_arm, levels, hard)[:, 0].mean(0)):
        prior[f"hard_pass@{k}"] = float(v)
    table = {"prior": prior}
    for label, curves in arms.items():
        row: Dict[str, float] = {}
        for i, name in enumerate(task.level_names):
            row[f"acc_{name}"] = float(level_accuracy(curves, levels, i)[:, -1].mean())
        auc = accuracy_auc(curves, levels, hard)
        row["hard_auc"] = float(auc.mean())
        if base_auc is not None:
            row["hard_auc_gain"] = float((auc - base_auc).mean())
            row["hard_auc_wins"] = paired_wins(auc, base_auc)
        for k, v in zip(KS, final_pass_at_k(curves, levels).mean(0)):
            row[f"pass@{k}"] = float(v)
        for k, v in zip(KS, final_pass_at_k(curves, levels, hard).mean(0)):
            row[f"hard_pass@{k}"] = float(v)
        row["neg_groups"] = float(torch.stack([c.negative_group_ratio for c in curves]).mean())
        row["nonzero_adv"] = float(torch.stack([c.nonzero_adv_frac for c in curves]).mean())
        table[label] = row
    return table


# ---------------------------------------------------------------------------------------------------
# 5. Output: JSON, plot, table
# ---------------------------------------------------------------------------------------------------
def to_json(
    results: Dict[str, Dict[str, object]], cfg: TrainConfig, seeds: Sequence[int], arms: Sequence[Arm]
) -> Dict[str, object]:
    """Everything measured, as plain lists: curves averaged over the questions of each level."""
    out: Dict[str, object] = {
        "train_config": dataclasses.asdict(cfg),
        "seeds": list(seeds),
        "arms": [dataclasses.asdict(a) for a in arms],
        "ks": list(KS),
        "tasks": {},
    }
    for name, res in results.items():
        task, levels = res["task"], res["levels"]
        arms_out = {}
        for label, curves in res["arms"].items():
            arms_out[label] = {
                "accuracy": {  # [level][seed][eval]
                    lv: level_accuracy(curves, levels, i).tolist() for i, lv in enumerate(task.level_names)
                },
                "pass_at_k": pass_at_k_curve(curves, levels).tolist(),  # [seed][eval][k], all questions
                "pass_at_k_hard": pass_at_k_curve(curves, levels, len(task.level_names) - 1).tolist(),
                "negative_group_ratio": torch.stack([c.negative_group_ratio for c in curves]).tolist(),
                "nonzero_adv_frac": torch.stack([c.nonzero_adv_frac for c in curves]).tolist(),
            }
        out["tasks"][name] = {
            "description": task.description,
            "task_config": dataclasses.asdict(res["task_config"]),
            "levels": list(task.level_names),
            "eval_steps": next(iter(res["arms"].values()))[0].eval_steps.tolist(),
            "arms": arms_out,
            "summary": summarize(res),
        }
    return out


def plot(results: Dict[str, Dict[str, object]], path: Path) -> None:
    """One row per task: hardest-level accuracy, easiest-level accuracy, final pass@k, negative groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 4, figsize=(20, 4.2 * len(results)), squeeze=False)
    for row, (name, res) in enumerate(results.items()):
        task, levels = res["task"], res["levels"]
        hard = len(task.level_names) - 1
        for j, (label, curves) in enumerate(res["arms"].items()):
            main_arm = label in ("grpo", "lens")
            style = dict(color=f"C{j}", lw=2.2 if main_arm else 1.3, ls="-" if main_arm else "--", label=label)
            steps = curves[0].eval_steps
            for col, lv in ((0, hard), (1, 0)):
                axes[row, col].plot(steps, level_accuracy(curves, levels, lv).mean(0), **style)
            axes[row, 2].plot(KS, final_pass_at_k(curves, levels, hard).mean(0), marker="o", **style)
            neg = torch.stack([c.negative_group_ratio for c in curves]).mean(0)
            w = 5
            axes[row, 3].plot(torch.arange(w - 1, len(neg)), neg.unfold(0, w, 1).mean(-1), **style)
        titles = (
            f"{name}: accuracy, {task.level_names[hard]} questions",
            f"{name}: accuracy, {task.level_names[0]} questions",
            f"{name}: final pass@k, {task.level_names[hard]} questions",
            f"{name}: negative-group ratio (5-step mean)",
        )
        for ax, title in zip(axes[row], titles):
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
        axes[row, 2].set_xscale("log", base=2)
        for ax in axes[row, (0, 1, 3)]:
            ax.set_xlabel("step")
        axes[row, 2].set_xlabel("k")
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(name: str, summary: Dict[str, Dict[str, float]], level_names: Sequence[str], n_seeds: int) -> str:
    """A compact text table of ``summarize``'s output."""
    hard = level_names[-1]
    cols = [f"acc_{lv}" for lv in level_names] + [
        "hard_auc",
        "hard_auc_gain",
        "hard_auc_wins",
        "pass@1",
        "pass@16",
        "hard_pass@16",
        "neg_groups",
        "nonzero_adv",
    ]
    heads = [f"acc {lv}" for lv in level_names] + [
        f"AUC {hard}",
        "AUC gain",
        f"wins/{n_seeds}",
        "pass@1",
        "pass@16",
        f"{hard} p@16",
        "neg grp",
        "A!=0",
    ]
    width = max(len(h) for h in heads) + 1
    lines = [
        f"{name} (final values, mean over {n_seeds} paired seeds; AUC gain and wins vs grpo)",
        f"{'estimator':<20s}" + "".join(f"{h:>{width}s}" for h in heads),
    ]
    for label, row in summary.items():
        cells = []
        for c in cols:
            v = row.get(c)
            if v is None:
                cells.append(f"{'-':>{width}s}")
            else:
                cells.append(f"{int(v):>{width}d}" if c == "hard_auc_wins" else f"{v:>{width}.3f}")
        lines.append(f"{label:<20s}" + "".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# 6. CLI
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="RLVR simulator: every registered advantage estimator (GRPO, LENS and variants, "
        "PSR/NSR/W-REINFORCE) trains the same tabular policy with the same update rule and paired "
        "seeds, on a multiple-choice bandit (LENS paper 4.1) and digit-by-digit arithmetic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=["bandit", "arithmetic"],
        choices=["bandit", "arithmetic"],
        help="which tasks to run",
    )
    p.add_argument(
        "--estimators",
        nargs="+",
        default=None,
        choices=list(ADV_ESTIMATORS),
        metavar="NAME",
        help="registered estimator names (default: all of them)",
    )
    p.add_argument("--seeds", type=int, default=8, help="number of paired seeds (0 .. N-1)")
    p.add_argument("--steps", type=int, default=TrainConfig.steps, help="training steps (rollouts)")
    p.add_argument("--lr", type=float, default=TrainConfig.lr, help="learning rate, the same for every estimator")
    p.add_argument("--group-size", type=int, default=TrainConfig.group_size, help="G, samples per question")
    p.add_argument(
        "--ppo-epochs",
        type=int,
        default=TrainConfig.ppo_epochs,
        help="gradient steps per rollout (> 1: off-policy, PPO clip 0.2 active)",
    )
    p.add_argument(
        "--optimizer", default=TrainConfig.optimizer, choices=["sgd", "adam"], help="optimizer of the logits"
    )
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every, help="steps between exact evaluations")
    p.add_argument(
        "--loss-norm",
        default=TrainConfig.loss_norm,
        choices=["response", "constant"],
        help="per-response token mean (GRPO) or a constant 1/T (Dr. GRPO, no length bias)",
    )
    p.add_argument("--alpha", type=float, default=None, help="override alpha of the LENS family")
    p.add_argument(
        "--out", type=Path, default=_REPO / "outputs" / "simulate", help="output folder for results.json and curves.png"
    )
    p.add_argument("--verbose", action="store_true", help="print the time of every run")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cfg = TrainConfig(
        steps=args.steps,
        group_size=args.group_size,
        lr=args.lr,
        ppo_epochs=args.ppo_epochs,
        optimizer=args.optimizer,
        eval_every=args.eval_every,
        loss_norm=args.loss_norm,
    )
    names = args.estimators or list(ADV_ESTIMATORS)
    arms = []
    for name in names:
        opts = {}
        if args.alpha is not None and "alpha" in ADV_ESTIMATORS[name].options:
            opts["alpha"] = args.alpha
        arms.append(Arm(name, name, opts))
    seeds = list(range(args.seeds))
    t0 = time.time()
    results = {}
    for name in args.tasks:
        results[name] = run_task(name, seeds, arms, cfg, verbose=args.verbose)
        print(f"[simulate] {name}: {time.time() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    blob = to_json(results, cfg, seeds, arms)
    (args.out / "results.json").write_text(json.dumps(blob))
    plot(results, args.out / "curves.png")
    for name, res in results.items():
        print()
        print(res["task"].description)
        print(format_table(name, blob["tasks"][name]["summary"], res["task"].level_names, len(seeds)))
    print(f"\n[simulate] {time.time() - t0:.0f} s; wrote {args.out / 'results.json'} and {args.out / 'curves.png'}")
    return blob


if __name__ == "__main__":
    main()
