"""Group advantage estimators for RLVR: GRPO, LENS and its variants, and the PSR/NSR/W-REINFORCE of arXiv 2506.01347.

Pure torch, no OpenRLHF import: tensors in, tensors out. Read it top to bottom:

1. ``masked_mean_log_probs``: per-token log-probs ``[B, T]`` + action mask -> mean per response ``[B]``.
2. ``classify_groups``: which groups are negative (all r equal below 1: all 0 when binary), mixed (rewards
   not all equal), or all-correct (all r = 1).
3. ``lens_terms`` / ``lens_calibrated_rewards``: the calibrated reward r~ of LENS (arXiv 2510.08696, §5.1).
4. The registry: every estimator is a pure function ``(rewards, ctx, **options) -> advantages``
   registered with ``@register_adv_est``; its options carry their paper and recommended value. The
   registry is the one source of truth for names, flags (``lens_openrlhf.train_ppo_ray`` builds its
   CLI choices and ``--algo.lens.*`` flags from it) and help texts.
5. ``group_advantages(name, rewards, ...)``: dispatch through the registry, with input validation.
6. ``group_statistics``: the per-batch numbers training logs (negative-group ratio, mean D, ...).

Shapes: ``rewards`` and ``mean_log_probs`` are ``[n_groups, G]`` (one row per prompt, G samples per
prompt); every estimator returns ``[n_groups, G]`` float32 advantages (one scalar per response: the
outcome-reward setting, where each token of a response gets the same advantage).

Batch semantics: each spec says which samples of a rollout the actor trains on (``trains_on``: all of them,
or only the correct / only the incorrect ones, the others being dropped before the update) and with what
weight (``semantics``, read by the CLI help and docs/estimators.md).

Numerics: inputs of any floating dtype (bf16/fp16 included) are promoted to float64; every group statistic
(mean, std, the normalisation and LENS's terms) is computed in float64 and the output rounded once to
float32. A group whose rewards nearly tie (``[1, 1, 1, 0.9989]``: std 5e-4) is normalised as accurately as
any other: in float32 the rounding of ``x - mean`` (about 6e-8) would be divided by that std. No output is
NaN or Inf: a ``-inf`` mean log-prob is a response the policy gives probability 0 (pbar = 0, no penalty); a
response with no tokens has no probability to speak of and is treated the same way
(``masked_mean_log_probs`` returns ``-inf`` for it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

import torch
from torch import Tensor

__all__ = [
    "EPS_STD",
    "D_IMP_READINGS",
    "NEGATIVE",
    "MIXED",
    "ALL_CORRECT",
    "TRAIN_ALL",
    "TRAIN_CORRECT",
    "TRAIN_INCORRECT",
    "EstimatorOption",
    "EstimatorSpec",
    "LOGPROB_OPTIONS",
    "LOGPROB_SOURCE",
    "ADV_ESTIMATORS",
    "register_adv_est",
    "get_adv_estimator",
    "estimator_names",
    "masked_mean_log_probs",
    "classify_groups",
    "LensTerms",
    "confidence_weight",
    "lens_terms",
    "lens_calibrated_rewards",
    "group_advantages",
    "trained_samples",
    "group_statistics",
]

#: Added to the group std, exactly as OpenRLHF's ``group_norm`` branch does.
EPS_STD = 1e-9

#: Group kinds returned by :func:`classify_groups`.
NEGATIVE, MIXED, ALL_CORRECT = 0, 1, 2

#: ``EstimatorSpec.trains_on``: every sample of a rollout, or only the correct (r = 1) / incorrect (r = 0) ones.
TRAIN_ALL, TRAIN_CORRECT, TRAIN_INCORRECT = "all", "correct", "incorrect"

#: A mean log-prob above this is not a log-prob (pbar would exceed 1 by more than rounding noise).
_MAX_MEAN_LOG_PROB = 1e-3

#: The readings of D_imp's importance weights (eq. 14): ``pbar`` (length-normalised) or ``sequence`` (pi_old(o|q)).
D_IMP_READINGS = ("pbar", "sequence")


# ---------------------------------------------------------------------------------------------------
# 1. Per-response mean log-prob
# ---------------------------------------------------------------------------------------------------
def masked_mean_log_probs(log_probs: Tensor, action_mask: Optional[Tensor] = None) -> Tensor:
    """Mean token log-prob of each response: ``log pbar = (1/|o|) sum_t log pi(o_t | q, o_<t)``.

    Args:
        log_probs: ``[B, T]`` per-token log-probs of the sampled tokens (any float dtype).
        action_mask: ``[B, T]`` bool/int, 1 on response tokens; ``None`` means every position counts.
    Returns:
        ``[B]`` float32. A response with no tokens gets ``-inf`` (pbar = 0: no confidence, no penalty).
        Masked-out positions may hold anything, ``-inf`` and NaN included: they are never read.
    """
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be [batch, tokens], got shape {tuple(log_probs.shape)}")
    lp = log_probs.float()
    if action_mask is None:
        mask = torch.ones_like(lp, dtype=torch.bool)
    else:
        if action_mask.shape != log_probs.shape:
            raise ValueError(
                f"action_mask shape {tuple(action_mask.shape)} != log_probs shape {tuple(log_probs.shape)}"
            )
        mask = action_mask.bool()
    picked = torch.where(mask, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
    if torch.isnan(picked).any():
        raise ValueError("log_probs contains NaN on response tokens (action_mask == 1)")
    count = mask.sum(dim=-1)
    total = picked.sum(dim=-1)
    mean = total / count.clamp(min=1).to(lp.dtype)
    return torch.where(count > 0, mean, torch.full_like(mean, -math.inf))


# ---------------------------------------------------------------------------------------------------
# 2. Group kinds
# ---------------------------------------------------------------------------------------------------
def classify_groups(rewards: Tensor) -> Tensor:
    """Kind of each group, by the spread of its rewards.

    ``ALL_CORRECT``: every r = 1. ``NEGATIVE``: every r equal and below 1 (all r = 0 with binary rewards;
    an equal fractional group such as [.5, .5, .5, .5] carries no contrast between its samples either,
    so it is handled like a negative group: de-meaned calibrated rewards times alpha, no std). ``MIXED``:
    the rewards are not all equal (GRPO normalisation of the calibrated rewards).

    Args:
        rewards: ``[n_groups, G]`` rewards in [0, 1].
    Returns:
        ``[n_groups]`` int64 of ``NEGATIVE`` / ``MIXED`` / ``ALL_CORRECT``.
    """
    kind = torch.full(rewards.shape[:1], MIXED, dtype=torch.long, device=rewards.device)
    if rewards.numel() == 0:
        return kind
    first = rewards[:, 0]
    no_spread = (rewards == first.unsqueeze(-1)).all(dim=-1)
    kind[no_spread & (first < 1)] = NEGATIVE
    kind[no_spread & (first == 1)] = ALL_CORRECT
    return kind


# ---------------------------------------------------------------------------------------------------
# 3. LENS calibrated reward (§5.1)
# ---------------------------------------------------------------------------------------------------
class LensTerms(NamedTuple):
    """The intermediate quantities of LENS for one batch (float64).

    pbar:       ``[n, G]`` length-normalised probability pi_old(o|q)^(1/|o|) = exp(mean log-prob).
    D:          ``[n]``    the difficulty factor used (max(D_imp, 2 max pbar) or 2 max pbar).
    penalty:    ``[n, G]`` (1/G) * pbar / (D - pbar) in [0, 1/G]; 0 where pbar = 0.
    calibrated: ``[n, G]`` r~ = r - (1 - r) * penalty.
    """

    pbar: Tensor
    D: Tensor
    penalty: Tensor
    calibrated: Tensor


def confidence_weight(prob: Tensor, D) -> Tensor:
    """The MLE weight of an incorrect response, pi / (D - pi) (Theorem 1, eq. 9); 0 where pi = 0.

    Args:
        prob: ``[...]`` probabilities (pbar in practice); D: a tensor broadcastable to ``prob``, with
            D > prob wherever prob > 0.
    """
    D = torch.as_tensor(D, dtype=prob.dtype, device=prob.device)
    has_mass = prob > 0
    denom = torch.where(has_mass, D - prob, torch.ones_like(prob))
    return torch.where(has_mass, prob / denom, torch.zeros_like(prob))


def lens_terms(
    rewards: Tensor,
    mean_log_probs: Tensor,
    *,
    d_imp: str = "pbar",
    response_lengths: Optional[Tensor] = None,
) -> LensTerms:
    """Compute pbar, D and the calibrated reward of LENS (arXiv 2510.08696, §5.1).

        pbar_i = exp(mean_log_probs_i)
        D_imp  = ( (1/G) sum_i r_i / p_i )^-1                 (only when some r_i > 0)
        D      = max(D_imp, 2 max_j pbar_j)   mixed / all-correct groups
        D      = 2 max_j pbar_j               negative groups (all r_i = 0)
        r~_i   = r_i - (1 - r_i) (1/G) pbar_i / (D - pbar_i)

    Since D >= 2 max pbar, D - pbar_i >= pbar_i, so pbar_i / (D - pbar_i) lies in [0, 1] and every
    incorrect r~ in [-1/G, 0]. A group whose pbar are all 0 gets D = 0 and penalty 0 (no NaN).

    p_i, the probability in D_imp's importance weights (``d_imp``; ``--algo.lens.d_imp``):

    - ``"pbar"`` (default, our reading): p_i = pbar_i, the length-normalised probability. Eq. 14 writes
      pi_old(o_i|q), but with the raw sequence probability a correct answer of a few hundred tokens has
      pi_old ~ 1e-100, D_imp ~ 1e-100 * G / (sum of r), and ``max(D_imp, 2 max pbar)`` always picks the floor:
      D_imp would never matter. With pbar both sides of the max live on the same per-token scale, which is
      what the confidence weight pbar / (D - pbar) compares.
    - ``"sequence"``: eq. 14 as written, p_i = pi_old(o_i|q) = exp(sum of token log-probs) = pbar_i^|o_i|
      (|o_i| from ``response_lengths``; a length below 1 counts as 1). Only D_imp changes: the confidence
      weight keeps pbar, as §5.1 writes it. For answers of realistic length D = 2 max pbar in practice.

    Args:
        rewards: ``[n, G]`` in [0, 1] (validated by :func:`group_advantages`, not here).
        mean_log_probs: ``[n, G]`` mean token log-prob per response, <= 0; ``-inf`` allowed.
        d_imp: ``"pbar"`` or ``"sequence"``.
        response_lengths: ``[n, G]`` tokens per response; required with ``d_imp="sequence"``, unused otherwise.
    Returns:
        :class:`LensTerms` of float64 tensors.
    """
    if d_imp not in D_IMP_READINGS:
        raise ValueError(f"d_imp must be one of {', '.join(D_IMP_READINGS)}, got {d_imp!r}")
    r = rewards.to(torch.float64)
    G = r.shape[-1]
    pbar = torch.exp(mean_log_probs.to(torch.float64).clamp(max=0.0))
    max_pbar = pbar.max(dim=-1).values
    if d_imp == "sequence":
        if response_lengths is None:
            raise ValueError("d_imp='sequence' needs response_lengths (tokens per response): pi_old(o|q) = pbar^|o|")
        prob = pbar ** response_lengths.to(torch.float64).clamp(min=1.0)  # underflows to 0 for long answers
    else:
        prob = pbar
    # D_imp: r/p with 0/0 := 0 (an incorrect response contributes nothing) and r/0 := inf (a correct response of
    # probability 0, or one whose sequence probability underflows, drives D_imp to 0: the 2 max pbar floor decides).
    ratio = torch.where(r > 0, r / prob, torch.zeros_like(r))
    inv_d_imp = ratio.mean(dim=-1)  # (1/G) sum r_i / p_i, 0 for negative groups
    d_imp_value = torch.where(inv_d_imp > 0, 1.0 / inv_d_imp, torch.zeros_like(inv_d_imp))
    D = torch.maximum(d_imp_value, 2.0 * max_pbar)  # negative groups: D_imp = 0 -> D = 2 max pbar
    penalty = confidence_weight(pbar, D.unsqueeze(-1)) / G
    calibrated = r - (1.0 - r) * penalty
    return LensTerms(pbar=pbar, D=D, penalty=penalty, calibrated=calibrated)


def lens_calibrated_rewards(
    rewards: Tensor,
    mean_log_probs: Tensor,
    *,
    d_imp: str = "pbar",
    response_lengths: Optional[Tensor] = None,
) -> Tensor:
    """r~ of LENS, ``[n_groups, G]`` float32. See :func:`lens_terms` for the formula and ``d_imp``.

    Args:
        rewards: ``[n_groups, G]`` rewards in [0, 1].
        mean_log_probs: ``[n_groups, G]`` each response's mean token log-prob (pbar = its exp).
        response_lengths: ``[n_groups, G]`` tokens per response (``d_imp="sequence"`` only).
    """
    _validate(
        rewards,
        mean_log_probs,
        response_lengths,
        needs_log_probs=True,
        group_based=True,
        bounded_rewards=True,
        needs_lengths=d_imp == "sequence",
        lengths_for=" with d_imp='sequence'",
    )
    terms = lens_terms(rewards, mean_log_probs, d_imp=d_imp, response_lengths=response_lengths)
    return terms.calibrated.to(torch.float32)


# ---------------------------------------------------------------------------------------------------
# 4. The registry
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EstimatorOption:
    """One tunable option of an estimator (becomes ``--algo.lens.<name>`` on the CLI).

    A number (``type=float``, the default) or one of a few named readings (``type=str`` with ``choices``).
    """

    name: str
    default: Any
    help: str
    type: type = float
    #: ``check(value)`` returns an error string, or None when the value is valid.
    check: Optional[Callable[[Any], Optional[str]]] = None
    #: the values a ``str`` option may take (any other is refused when the options are resolved); () = no list
    choices: tuple = ()
    #: the values of this option with which the estimator also needs each response's length in tokens
    needs_lengths_with: tuple = ()

    @property
    def default_text(self) -> str:
        """The default as written on a command line (``0.25``, ``pbar``): recipe flags and the docs' table."""
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator. ``fn(rewards, ctx, **options) -> [n, G]`` advantages."""

    name: str
    fn: Callable[..., Tensor]
    help: str
    #: needs each response's mean token log-prob (pi_old confidence)
    needs_log_probs: bool = False
    #: needs each response's length in tokens, whatever its options (an option value may also ask for them:
    #: ``EstimatorOption.needs_lengths_with``; :meth:`needs_lengths_for` tells for given options)
    needs_lengths: bool = False
    #: uses statistics of the group of G samples of one prompt: needs G >= 2
    group_based: bool = True
    #: only defined for rewards in [0, 1]
    bounded_rewards: bool = False
    #: all-incorrect groups get non-zero advantages (what a dynamic filter must not drop)
    negative_groups_learn: bool = False
    #: LENS's own terms (D, calibrated reward) are meaningful for it and are logged
    lens_statistics: bool = False
    #: the samples the actor trains on: TRAIN_ALL, or only TRAIN_CORRECT / TRAIN_INCORRECT ones; the others are
    #: dropped from the actor's replay buffer before the update (coupling patch B1), so they weigh nothing in
    #: the loss's normalisation and cost no training forward or backward
    trains_on: str = TRAIN_ALL
    #: defined only for rewards of exactly 0 or 1 (the two classes of arXiv 2506.01347): anything else is refused
    binary_rewards: bool = False
    #: batch semantics in one sentence: which samples are trained on, with what weight (CLI help, docs)
    semantics: str = ""
    options: Mapping[str, EstimatorOption] = field(default_factory=dict)

    def resolve_options(self, given: Mapping[str, Any]) -> Dict[str, Any]:
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"estimator '{self.name}' has no option(s) {unknown}; its options: {known}")
        out = {}
        for name, opt in self.options.items():
            value = given.get(name, opt.default)
            if value is None:
                value = opt.default
            value = opt.type(value)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"option '{name}' of estimator '{self.name}' must be finite, got {value}")
            if opt.choices and value not in opt.choices:
                raise ValueError(
                    f"option '{name}' of estimator '{self.name}' must be one of {', '.join(opt.choices)}, got {value!r}"
                )
            if opt.check is not None:
                err = opt.check(value)
                if err:
                    raise ValueError(f"option '{name}' of estimator '{self.name}': {err}")
            out[name] = value
        return out

    def needs_lengths_for(self, given: Mapping[str, Any]) -> bool:
        """Whether the estimator needs each response's length with these options (unresolved, as given:
        defaults apply): always when ``needs_lengths``, else when an option takes a value of its
        ``needs_lengths_with`` (``lens`` with ``d_imp='sequence'``)."""
        if self.needs_lengths:
            return True
        opts = self.resolve_options(given)
        return any(opts[name] in opt.needs_lengths_with for name, opt in self.options.items())


class EstimatorContext(NamedTuple):
    """What an estimator may read besides rewards (all ``[n, G]``, already validated)."""

    mean_log_probs: Optional[Tensor]
    response_lengths: Optional[Tensor]


ADV_ESTIMATORS: Dict[str, EstimatorSpec] = {}


def register_adv_est(
    name: str,
    *,
    help: str,
    needs_log_probs: bool = False,
    needs_lengths: bool = False,
    group_based: bool = True,
    bounded_rewards: bool = False,
    negative_groups_learn: bool = False,
    lens_statistics: bool = False,
    trains_on: str = TRAIN_ALL,
    binary_rewards: bool = False,
    semantics: str,
    options: tuple = (),
):
    """Decorator: register ``fn(rewards, ctx, **options) -> advantages`` under ``name``.

    Registering is all it takes to add an estimator: the CLI choices, ``--algo.lens.*`` options, the
    validation (G >= 2, rewards in [0, 1] or exactly 0/1, log-prob source, dynamic filtering), the samples
    the actor trains on and the logged statistics are read from the spec. ``semantics`` (required) states
    which samples are trained on and with what weight.
    """

    def deco(fn):
        if name in ADV_ESTIMATORS:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        if trains_on not in (TRAIN_ALL, TRAIN_CORRECT, TRAIN_INCORRECT):
            raise ValueError(
                f"estimator '{name}': trains_on must be 'all', 'correct' or 'incorrect', got {trains_on!r}"
            )
        if trains_on != TRAIN_ALL and not binary_rewards:
            raise ValueError(f"estimator '{name}' trains on one class of samples and so needs binary_rewards=True")
        if not semantics.strip():
            raise ValueError(f"estimator '{name}': semantics must say which samples are trained on, with what weight")
        ADV_ESTIMATORS[name] = EstimatorSpec(
            name=name,
            fn=fn,
            help=help,
            needs_log_probs=needs_log_probs,
            needs_lengths=needs_lengths,
            group_based=group_based,
            bounded_rewards=bounded_rewards,
            negative_groups_learn=negative_groups_learn,
            lens_statistics=lens_statistics,
            trains_on=trains_on,
            binary_rewards=binary_rewards,
            semantics=semantics,
            options={o.name: o for o in options},
        )
        return fn

    return deco


def estimator_names() -> list:
    return list(ADV_ESTIMATORS)


def get_adv_estimator(name) -> EstimatorSpec:
    """The spec registered as ``name`` (a spec is returned as it is: callers that looked it up once pass it on)."""
    if isinstance(name, EstimatorSpec):
        return name
    try:
        return ADV_ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator '{name}'; registered: {', '.join(ADV_ESTIMATORS)}") from None


def _non_negative(v):
    return None if v >= 0 else f"must be >= 0, got {v}"


ALPHA = EstimatorOption(
    "alpha",
    0.25,
    "Weight of negative (all-incorrect) groups: J = J_GRPO[mixed] + alpha * J_GRPO[negative] "
    "(LENS, arXiv 2510.08696, §5.1 'Final objective'). Paper: 0.25 for both models.",
    check=_non_negative,
)


def _gamma_positive(v):
    return (
        None
        if v > 0
        else (
            f"must be > 0, got {v}: gamma is compared with pbar = pi(o)^(1/|o|) in [0, 1] and must exceed every "
            "pbar of a batch"
        )
    )


GAMMA = EstimatorOption(
    "gamma",
    1.05,
    "Length-preference base of rho = gamma^|o|: incorrect r~ = -(1/G) min(1, (1/|o|) pbar / (gamma - pbar)) "
    "(LENS, arXiv 2510.08696, Appendix C, with the 1/G and the [-1/G, 0] bound of §5.1). Must be > 0 and above "
    "every pbar of a batch: a batch whose max pbar reaches gamma is refused. Appendix C takes gamma 'on the same "
    "scale as pbar' (below 1 is fine); the paper gives no value ('properly tuned'); the default 1.05 is above every "
    "pbar in [0, 1], so it is never refused.",
    check=_gamma_positive,
)
D_IMP = EstimatorOption(
    "d_imp",
    "pbar",
    "The probability in D_imp's importance weights, D_imp = ((1/G) sum_i r_i / p_i)^-1 (LENS, arXiv 2510.08696, "
    "§5.1, eq. 14): 'pbar' = pi_old(o|q)^(1/|o|), the length-normalised probability of the rest of §5.1 (our "
    "reading; the paper writes pi_old in eq. 14); 'sequence' = eq. 14 as written, p_i = pi_old(o_i|q) = "
    "pbar_i^|o_i| (needs the response lengths), with which D_imp ~ 0 for answers of realistic length and "
    "D = 2 max pbar.",
    type=str,
    choices=D_IMP_READINGS,
    needs_lengths_with=("sequence",),
)
#: ``--algo.lens.logprob_source`` and ``--algo.lens.allow_truncated_logprobs``: where pbar's pi_old comes from, taken
#: by every estimator that needs log-probs (``EstimatorSpec.needs_log_probs``)
LOGPROB_SOURCE = EstimatorOption(
    "logprob_source",
    "vllm",
    "Where pi_old(o|q) of LENS comes from: 'vllm' = the log-probs vLLM returns for the sampled tokens (logprobs=1, "
    "processed mode: the distribution vLLM sampled from; requested even with IS correction off); 'actor' = the "
    "actor's recomputed log-probs at the rollout temperature (no extra cost), the same pi_old as the PPO ratio. "
    "LENS (arXiv 2510.08696, §5.1) uses pi_old. With --rollout.top_p 1.0 (the paper's setting) both are pi_old up to "
    "numerics; with top-p < 1 vLLM's are those of the truncated, renormalised distribution, which the actor and the "
    "PPO ratio never see, so that combination is refused unless --algo.lens.allow_truncated_logprobs.",
    type=str,
    choices=("vllm", "actor"),
)
ALLOW_TRUNCATED_LOGPROBS = EstimatorOption(
    "allow_truncated_logprobs",
    False,
    "Accept --algo.lens.logprob_source vllm with --rollout.top_p < 1: pbar then comes from the top-p truncated, "
    "renormalised sampling distribution (larger than pi_old's for the kept tokens), not from the temperature-only "
    "pi_old of the actor and the PPO ratio. Off by default.",
    type=bool,
)
LOGPROB_OPTIONS = (LOGPROB_SOURCE, ALLOW_TRUNCATED_LOGPROBS)
LAM = EstimatorOption(
    "lam",
    0.1,
    "Weight of correct samples in W-REINFORCE: A = lam on correct, -1 on incorrect (Zhu et al., "
    "arXiv 2506.01347, §5). Paper: 0.1.",
    check=_non_negative,
)


def _grpo_normalise(x: Tensor) -> Tensor:
    """(x - mean) / (unbiased std + 1e-9) over the last dim: OpenRLHF's ``group_norm`` formula, in float64.

    Args:
        x: ``[n, G]`` any floating dtype. Returns: ``[n, G]`` float64 (callers round once to float32).
    """
    x = x.to(torch.float64)
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + EPS_STD)


def _lens_combine(rewards: Tensor, calibrated: Tensor, alpha: float, *, mixed: bool, negative: bool) -> Tensor:
    """Advantages from calibrated rewards: mixed groups GRPO-normalised, negative groups de-meaned x alpha.

    Group kinds as :func:`classify_groups` (negative = all rewards equal and below 1). ``mixed=False`` gives
    mixed groups plain GRPO on r; ``negative=False`` gives negative groups zero. All-correct groups: zero.
    Every statistic in float64; the result ``[n, G]`` float32.
    """
    kind = classify_groups(rewards).unsqueeze(-1)
    r = rewards.to(torch.float64)
    cal = calibrated.to(torch.float64)
    zero = torch.zeros_like(r)
    adv_mixed = _grpo_normalise(cal if mixed else r)
    adv_neg = alpha * (cal - cal.mean(-1, keepdim=True)) if negative else zero
    out = torch.where(kind == MIXED, adv_mixed, zero)
    return torch.where(kind == NEGATIVE, adv_neg, out).to(torch.float32)


@register_adv_est(
    "grpo",
    help="GRPO (Shao et al., arXiv 2402.03300): (r - group mean) / (group unbiased std + 1e-9); "
    "OpenRLHF's 'group_norm' computed in float64 (equal to it within its float32 rounding). Negative and "
    "all-correct groups get zero advantage.",
    semantics="every sample; weight: the group z-score (r - mean) / (std + 1e-9); all-incorrect and all-correct "
    "groups weigh 0 but stay in the batch (their tokens count in the loss's normalisation)",
)
def grpo(rewards: Tensor, ctx: EstimatorContext) -> Tensor:
    return _grpo_normalise(rewards).to(torch.float32)


@register_adv_est(
    "lens",
    help="LENS (Feng et al., arXiv 2510.08696): confidence-calibrated negative rewards r~; mixed groups "
    "GRPO-normalised, negative groups de-meaned and weighted by alpha, all-correct groups zero.",
    needs_log_probs=True,
    bounded_rewards=True,
    options=(ALPHA, D_IMP),
    negative_groups_learn=True,
    lens_statistics=True,
    semantics="every sample; weight: in mixed groups the z-score of the calibrated rewards r~ (correct > 0, "
    "incorrect < 0, a confident error more negative); in all-incorrect groups alpha (r~ - group mean), at most "
    "alpha/G in magnitude; all-correct groups weigh 0 but stay in the batch",
)
def lens(rewards: Tensor, ctx: EstimatorContext, alpha: float, d_imp: str) -> Tensor:
    cal = lens_terms(rewards, ctx.mean_log_probs, d_imp=d_imp, response_lengths=ctx.response_lengths).calibrated
    return _lens_combine(rewards, cal, alpha, mixed=True, negative=True)


@register_adv_est(
    "lens_mixed_only",
    help="Ablation 'LENS with only mixed groups' (arXiv 2510.08696, Table 2): calibrated rewards in "
    "mixed groups, negative groups keep zero advantage.",
    needs_log_probs=True,
    bounded_rewards=True,
    options=(D_IMP,),
    lens_statistics=True,
    semantics="every sample; weight: in mixed groups as lens; all-incorrect and all-correct groups weigh 0 but "
    "stay in the batch",
)
def lens_mixed_only(rewards: Tensor, ctx: EstimatorContext, d_imp: str) -> Tensor:
    cal = lens_terms(rewards, ctx.mean_log_probs, d_imp=d_imp, response_lengths=ctx.response_lengths).calibrated
    return _lens_combine(rewards, cal, 0.0, mixed=True, negative=False)


@register_adv_est(
    "lens_negative_only",
    help="Ablation 'LENS with only negative groups' (arXiv 2510.08696, Table 2): mixed groups are plain "
    "GRPO on r; negative groups de-meaned calibrated rewards times alpha.",
    needs_log_probs=True,
    bounded_rewards=True,
    options=(ALPHA,),
    negative_groups_learn=True,
    lens_statistics=True,
    semantics="every sample; weight: in mixed groups the GRPO z-score of r; in all-incorrect groups as lens "
    "(alpha (r~ - group mean)); all-correct groups weigh 0 but stay in the batch",
)
def lens_negative_only(rewards: Tensor, ctx: EstimatorContext, alpha: float) -> Tensor:
    # no d_imp option: mixed groups are plain GRPO on r and a negative group has no D_imp (D = 2 max pbar)
    cal = lens_terms(rewards, ctx.mean_log_probs).calibrated
    return _lens_combine(rewards, cal, alpha, mixed=False, negative=True)


def length_pref_calibrated_rewards(
    rewards: Tensor, mean_log_probs: Tensor, response_lengths: Tensor, gamma: float
) -> Tensor:
    """Appendix C's length preference rho = gamma^|o|, with §5.1's 1/G and bound. ``[n, G]`` float64.

        w_i  = min(1, (1/|o_i|) pbar_i / (gamma - pbar_i))      (0 where pbar_i = 0; |o_i| below 1 counts as 1)
        r~_i = r_i - (1 - r_i) (1/G) w_i

    Appendix C (arXiv 2510.08696) derives the incorrect reward -pi/(D rho - pi) for rho = gamma^|o| and, with
    D^(1/|o|) ~ 1 and gamma "on the same scale as pbar", sets it to -(1/|o|) pbar / (gamma - pbar): the
    counterpart of eq. 10's -pi/(D - pi), before §5.1's practical rules. Used as it stands, that term has no
    1/G and no bound, and an incorrect answer can end above zero: rewards [1, 0, 0, 0], pbar
    [.9, .99, .5, .5], |o| [300, 10, 300, 300], gamma 1.05 give r~ = [1, -1.65, -.003, -.003] and advantages
    [1.06, -1.35, +.147, +.147]. Here §5.1's two rules apply to it as they do to LENS's own term (the paper
    does not say whether Appendix C's variant takes them; this is our choice):

    - "we should conservatively overestimate D(q) so that the denominator is positive and well-conditioned
      ... which keeps the calibrated rewards in [-1, 1]": gamma is one number for the whole run, so there is
      no per-group D to raise; the smallest base that keeps sample i's weight at most 1 is
      pbar_i (1 + 1/|o_i|), and using max(gamma, pbar_i (1 + 1/|o_i|)) in its place is exactly min(1, ...).
      Below the bound, i.e. when |o_i| >= pbar_i / (gamma - pbar_i) (gamma 1.05: every answer of 20 tokens or
      more), the weight is Appendix C's.
    - "To maintain sign invariance, we scale all negative calibrated rewards by 1/G" (Handling Invariance).

    So an incorrect r~ lies in [-1/G, 0] and a correct one is 1, as in LENS: a mixed group of 0/1 rewards with
    k >= 1 correct answers has mean r~ >= (k - (G - k)/G)/G > 0 >= every incorrect r~, so after GRPO
    normalisation every incorrect answer is negative and every correct one positive (and in any group a sample
    with r = 0 is below every sample with r = 1, since the normalisation is increasing).

    gamma must exceed every pbar of the batch (else gamma - pbar <= 0): checked here, per batch, with one line
    naming ``--algo.lens.gamma`` and the batch's max pbar. The registry only asks gamma > 0 up front.
    """
    r = rewards.to(torch.float64)
    G = r.shape[-1]
    pbar = torch.exp(mean_log_probs.to(torch.float64).clamp(max=0.0))
    if pbar.numel() and (pbar >= gamma).any():
        raise ValueError(
            f"lens_length_pref: --algo.lens.gamma {gamma:g} must exceed every pbar = exp(mean token log-prob) of "
            f"the batch, and this batch's max pbar is {pbar.max().item():.6g}; raise --algo.lens.gamma above it "
            "(any gamma > 1 exceeds every pbar)"
        )
    length = response_lengths.to(torch.float64).clamp(min=1.0)
    weight = (confidence_weight(pbar, gamma) / length).clamp(max=1.0)
    return r - (1.0 - r) * weight / G


@register_adv_est(
    "lens_length_pref",
    help="LENS with a length preference rho = gamma^|o| (arXiv 2510.08696, Appendix C): incorrect "
    "r~ = -(1/G) min(1, (1/|o|) pbar/(gamma - pbar)) (Appendix C's term with §5.1's 1/G and bound, so r~ in "
    "[-1/G, 0] as in 'lens'); then grouped as 'lens' (alpha on negative groups).",
    needs_log_probs=True,
    needs_lengths=True,
    bounded_rewards=True,
    options=(ALPHA, GAMMA),
    negative_groups_learn=True,
    semantics="every sample; weight: as lens (in mixed groups correct > 0, incorrect < 0), with the incorrect "
    "samples' r~ = -(1/G) min(1, (1/|o|) pbar / (gamma - pbar))",
)
def lens_length_pref(rewards: Tensor, ctx: EstimatorContext, alpha: float, gamma: float) -> Tensor:
    cal = length_pref_calibrated_rewards(rewards, ctx.mean_log_probs, ctx.response_lengths, gamma)
    return _lens_combine(rewards, cal, alpha, mixed=True, negative=True)


@register_adv_est(
    "psr",
    help="Positive Sample Reinforcement (Zhu et al., arXiv 2506.01347): A = +1 on the correct samples, which "
    "alone are trained on; rewards must be exactly 0 or 1. No group statistics.",
    group_based=False,
    bounded_rewards=True,
    binary_rewards=True,
    trains_on=TRAIN_CORRECT,
    semantics="only the correct samples (r = 1), weight A = +1; the incorrect ones are dropped before the update "
    "(no loss term, no tokens in the loss's normalisation, no training forward or backward)",
)
def psr(rewards: Tensor, ctx: EstimatorContext) -> Tensor:
    return rewards.to(torch.float64).to(torch.float32)


@register_adv_est(
    "nsr",
    help="Negative Sample Reinforcement (Zhu et al., arXiv 2506.01347): A = -1 on the incorrect samples, which "
    "alone are trained on; rewards must be exactly 0 or 1. No group statistics.",
    group_based=False,
    bounded_rewards=True,
    binary_rewards=True,
    trains_on=TRAIN_INCORRECT,
    negative_groups_learn=True,
    semantics="only the incorrect samples (r = 0), weight A = -1; the correct ones are dropped before the update "
    "(no loss term, no tokens in the loss's normalisation, no training forward or backward)",
)
def nsr(rewards: Tensor, ctx: EstimatorContext) -> Tensor:
    return (rewards.to(torch.float64) - 1.0).to(torch.float32)


@register_adv_est(
    "w_reinforce",
    help="Weighted REINFORCE (Zhu et al., arXiv 2506.01347): A = lam * r - (1 - r), i.e. lam on "
    "correct and -1 on incorrect samples; rewards must be exactly 0 or 1. Paper: lam = 0.1.",
    group_based=False,
    bounded_rewards=True,
    binary_rewards=True,
    options=(LAM,),
    negative_groups_learn=True,
    semantics="every sample (both classes, as the paper's code); weight A = lam on correct, -1 on incorrect",
)
def w_reinforce(rewards: Tensor, ctx: EstimatorContext, lam: float) -> Tensor:
    r = rewards.to(torch.float64)
    return (lam * r - (1.0 - r)).to(torch.float32)


# ---------------------------------------------------------------------------------------------------
# 5. Dispatch
# ---------------------------------------------------------------------------------------------------
def _validate(
    rewards: Tensor,
    mean_log_probs: Optional[Tensor],
    response_lengths: Optional[Tensor],
    *,
    needs_log_probs: bool,
    group_based: bool,
    bounded_rewards: bool,
    needs_lengths: bool = False,
    binary_rewards: bool = False,
    name: str = "lens",
    lengths_for: str = "",
) -> None:
    if not isinstance(rewards, Tensor) or rewards.dim() != 2:
        shape = tuple(rewards.shape) if isinstance(rewards, Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a [n_groups, G] tensor, got {shape}")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be a floating tensor, got {rewards.dtype}")
    n, G = rewards.shape
    if group_based and G < 2:
        raise ValueError(
            f"estimator '{name}' compares the G samples of a prompt and needs G >= 2 "
            f"(got G = {G}); raise n_samples_per_prompt (--rollout.n_samples_per_prompt; paper: 16)"
        )
    if torch.isnan(rewards).any():
        raise ValueError("rewards contains NaN")
    if torch.isinf(rewards).any():
        raise ValueError("rewards contains Inf")
    if bounded_rewards and n * G > 0 and (rewards.min() < 0 or rewards.max() > 1):
        raise ValueError(
            f"estimator '{name}' needs rewards in [0, 1] (got min {rewards.min().item():g}, max "
            f"{rewards.max().item():g}); a verifiable reward is 1 for correct, 0 for incorrect"
        )
    if binary_rewards and n * G > 0:
        other = rewards[(rewards != 0) & (rewards != 1)]
        if other.numel():
            raise ValueError(
                f"estimator '{name}' needs rewards of exactly 0 or 1 (got {other[0].item():.6g}): its two classes "
                "are correct (r = 1) and incorrect (r = 0), and a reward in between belongs to neither"
            )
    if needs_log_probs:
        if mean_log_probs is None:
            raise ValueError(
                f"estimator '{name}' needs mean_log_probs (each response's mean token log-prob under pi_old)"
            )
        if mean_log_probs.shape != rewards.shape:
            raise ValueError(
                f"mean_log_probs shape {tuple(mean_log_probs.shape)} != rewards shape {tuple(rewards.shape)}"
            )
        if torch.isnan(mean_log_probs).any():
            raise ValueError("mean_log_probs contains NaN")
        if (mean_log_probs > _MAX_MEAN_LOG_PROB).any():
            raise ValueError(
                f"mean_log_probs must be <= 0 (log-probabilities), got max {mean_log_probs.max().item():g}"
            )
    if needs_lengths:
        if response_lengths is None:
            raise ValueError(f"estimator '{name}'{lengths_for} needs response_lengths (tokens per response)")
        if response_lengths.shape != rewards.shape:
            raise ValueError(
                f"response_lengths shape {tuple(response_lengths.shape)} != rewards shape {tuple(rewards.shape)}"
            )
        if torch.isnan(response_lengths.to(torch.float64)).any() or (response_lengths < 0).any():
            raise ValueError("response_lengths must be non-negative numbers")


def group_advantages(
    name,
    rewards: Tensor,
    mean_log_probs: Optional[Tensor] = None,
    *,
    response_lengths: Optional[Tensor] = None,
    **options: Any,
) -> Tensor:
    """Advantages of estimator ``name`` for a batch of groups.

    Args:
        name: a registered estimator (see :func:`estimator_names`), or its spec.
        rewards: ``[n_groups, G]``; in [0, 1] for LENS, exactly 0 or 1 for the estimators of arXiv 2506.01347.
        mean_log_probs: ``[n_groups, G]`` mean token log-prob per response (LENS family).
        response_lengths: ``[n_groups, G]`` tokens per response (``lens_length_pref``; ``lens`` and
            ``lens_mixed_only`` with ``d_imp="sequence"``).
        **options: the estimator's options (e.g. ``alpha=0.25``); defaults from the registry.
    Returns:
        ``[n_groups, G]`` float32 advantages, finite.
    """
    spec = get_adv_estimator(name)
    name = spec.name
    opts = spec.resolve_options(options)
    _validate(
        rewards,
        mean_log_probs,
        response_lengths,
        needs_log_probs=spec.needs_log_probs,
        group_based=spec.group_based,
        bounded_rewards=spec.bounded_rewards,
        needs_lengths=spec.needs_lengths_for(opts),
        binary_rewards=spec.binary_rewards,
        name=name,
        lengths_for="".join(
            f" with {k}={opts[k]!r}" for k, o in spec.options.items() if opts[k] in o.needs_lengths_with
        ),
    )
    ctx = EstimatorContext(mean_log_probs=mean_log_probs, response_lengths=response_lengths)
    adv = spec.fn(rewards, ctx, **opts).to(torch.float32)
    if not torch.isfinite(adv).all():  # a bug, not a user error: never hand NaN/Inf to the trainer
        raise FloatingPointError(f"estimator '{name}' produced non-finite advantages")
    return adv


def trained_samples(name, rewards: Tensor) -> Tensor:
    """Which samples estimator ``name`` trains on (its spec's ``trains_on``).

    Args:
        name: a registered estimator (or its spec); rewards: ``[n_groups, G]`` (exactly 0/1 for a one-class estimator,
            validated by :func:`group_advantages`).
    Returns:
        ``[n_groups, G]`` bool: all True for ``TRAIN_ALL``; ``rewards == 1`` for ``TRAIN_CORRECT``;
        ``rewards == 0`` for ``TRAIN_INCORRECT``.
    """
    kept = get_adv_estimator(name).trains_on
    if kept == TRAIN_CORRECT:
        return rewards == 1
    if kept == TRAIN_INCORRECT:
        return rewards == 0
    return torch.ones_like(rewards, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------------
# 6. Statistics for logging
# ---------------------------------------------------------------------------------------------------
def group_statistics(
    rewards: Tensor,
    advantages: Optional[Tensor] = None,
    mean_log_probs: Optional[Tensor] = None,
    *,
    lens_terms_too: bool = True,
    d_imp: str = "pbar",
    response_lengths: Optional[Tensor] = None,
) -> Dict[str, float]:
    """Per-batch numbers worth logging each step.

    Args:
        rewards: ``[n, G]``; advantages: ``[n, G]`` (optional); mean_log_probs: ``[n, G]`` (optional).
        d_imp, response_lengths: D_imp's reading and ``[n, G]`` tokens per response, as the estimator was given
            them (:func:`lens_terms`), so that ``mean_D`` is the D it used.
    Returns:
        dict of floats:
          ``negative_group_ratio``, ``mixed_group_ratio``, ``all_correct_group_ratio`` (sum to 1; kinds
          as :func:`classify_groups`: negative = all rewards equal and below 1, all 0 when binary);
          ``nonzero_adv_frac`` (fraction of samples with |A| > 1e-8; with advantages) and
          ``mean_abs_adv_negative`` / ``mean_abs_adv_mixed`` (mean |A| over the samples of negative / mixed
          groups, 0.0 when there are none; with advantages);
          with mean_log_probs: ``mean_pbar`` (all samples) and ``mean_pbar_incorrect`` (samples with
          r = 0; NaN-free: 0.0 when there are none); and, unless ``lens_terms_too=False`` (an estimator
          whose spec has ``lens_statistics=False``), ``mean_D`` (mean over groups),
          ``mean_D_negative``/``mean_D_mixed`` (0.0 when empty) and ``mean_calibrated_reward_incorrect``.
    """
    kind = classify_groups(rewards)
    n = max(int(kind.numel()), 1)
    stats = {
        "negative_group_ratio": float((kind == NEGATIVE).sum()) / n,
        "mixed_group_ratio": float((kind == MIXED).sum()) / n,
        "all_correct_group_ratio": float((kind == ALL_CORRECT).sum()) / n,
    }
    if advantages is not None:
        stats["nonzero_adv_frac"] = float((advantages.abs() > 1e-8).float().mean()) if advantages.numel() else 0.0
        # how large the negative-group signal is next to the mixed groups' (0.0 when a kind is absent)
        for label, k in (("negative", NEGATIVE), ("mixed", MIXED)):
            m = kind == k
            stats[f"mean_abs_adv_{label}"] = float(advantages[m].abs().mean()) if bool(m.any()) else 0.0
    if mean_log_probs is not None:
        t = lens_terms(rewards, mean_log_probs, d_imp=d_imp, response_lengths=response_lengths)
        incorrect = rewards == 0

        def _mean(x: Tensor, m: Tensor) -> float:
            return float(x[m].mean()) if bool(m.any()) else 0.0

        stats["mean_pbar"] = float(t.pbar.mean()) if t.pbar.numel() else 0.0
        stats["mean_pbar_incorrect"] = _mean(t.pbar, incorrect)
        if lens_terms_too:
            stats["mean_D"] = float(t.D.mean()) if t.D.numel() else 0.0
            stats["mean_D_negative"] = _mean(t.D, kind == NEGATIVE)
            stats["mean_D_mixed"] = _mean(t.D, kind == MIXED)
            stats["mean_calibrated_reward_incorrect"] = _mean(t.calibrated, incorrect)
    return stats


def recipe_flags(name: str) -> List[str]:
    """``--algo.lens.<option> <value>`` for every option of estimator ``name`` at its registry default (the
    paper's value), so that a launch script states them without listing estimators itself. [] for
    OpenRLHF's own estimators (not in the registry)."""
    spec = ADV_ESTIMATORS.get(name)
    if spec is None:
        return []
    return [tok for opt in spec.options.values() for tok in (f"--algo.lens.{opt.name}", opt.default_text)]


def markdown_tables() -> str:
    """The estimator table and the option table of docs/estimators.md, written from the registry (the doc holds
    this text verbatim; tests/test_estimators.py checks it): name, definition, the samples trained on and their
    weight; each option with its default and help."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    trains = {TRAIN_ALL: "all", TRAIN_CORRECT: "correct only", TRAIN_INCORRECT: "incorrect only"}
    rows = ["| estimator | definition | trains on | batch semantics |", "| --- | --- | --- | --- |"]
    for s in ADV_ESTIMATORS.values():
        rows.append(f"| `{s.name}` | {cell(s.help)} | {trains[s.trains_on]} | {cell(s.semantics)} |")
    rows += ["", "| option | default | used by | meaning |", "| --- | --- | --- | --- |"]
    users: Dict[str, List[str]] = {}
    for s in ADV_ESTIMATORS.values():
        for o in s.options:
            users.setdefault(o, []).append(f"`{s.name}`")
    seen = {}
    for s in ADV_ESTIMATORS.values():
        seen.update({o.name: o for o in s.options.values() if o.name not in seen})
    for name, o in seen.items():
        rows.append(f"| `--algo.lens.{name}` | {o.default_text} | {', '.join(users[name])} | {cell(o.help)} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m lens_openrlhf.estimators --recipe-flags NAME | --tables
    import sys

    if sys.argv[1:] == ["--tables"]:
        sys.stdout.write(markdown_tables())
    elif len(sys.argv) == 3 and sys.argv[1] == "--recipe-flags":
        print(" ".join(recipe_flags(sys.argv[2])))
    else:
        sys.exit("usage: python -m lens_openrlhf.estimators --recipe-flags ESTIMATOR | --tables")
