"""The run's estimator as A1 and B1 use it: the registry's spec and the options the driver resolved, looked up once
per process and kept for the whole run."""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional

from ..estimators import ADV_ESTIMATORS, EstimatorSpec, get_adv_estimator
from .rollout_logprobs import logprob_source


class RunPlan(NamedTuple):
    """What A1 and B1 need from the registry for a run: looked up once per process (:func:`run_plan`)."""

    name: str
    spec: EstimatorSpec
    options: Dict[str, Any]  # the values the driver resolved
    logprob_source: str
    needs_lengths: bool


def run_plan(owner, args) -> Optional[RunPlan]:
    """The estimator of ``args`` looked up in the registry once, kept on ``owner`` for the whole run (A1: the
    experience maker, one per PPOTrainer actor; B1: the actor trainer of a policy rank); None for an estimator of
    OpenRLHF's own (A1 and B1 hand those to the original). The options
    are the values the driver resolved (``coupling.validation.resolve_lens_options``); a None (args built without the
    launcher, e.g. OpenRLHF's own tests) falls back to the registry default, as the driver would have."""
    name = args.algo.advantage.estimator
    plan = getattr(owner, "_lens_run_plan", None)
    if plan is not None and plan.name == name:
        return plan
    if name not in ADV_ESTIMATORS:
        return None
    spec = get_adv_estimator(name)
    lens = args.algo.lens
    options = spec.resolve_options({k: getattr(lens, k) for k in spec.options if getattr(lens, k, None) is not None})
    owner._lens_run_plan = RunPlan(name, spec, options, logprob_source(args), spec.needs_lengths_for(options))
    return owner._lens_run_plan
