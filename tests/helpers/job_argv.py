"""One argv builder for the tests that parse or launch ``lens_openrlhf.train_ppo_ray``: the flags every such command
needs (a model, a reward file, the estimator, vLLM engines, samples per prompt) in the pinned release's dotted spelling,
then what the test is about. Tests of the flat flags of OpenRLHF <= 0.10, and commands typed as a user types them
(``test_ray_job_submit.py``), spell their flags out on purpose."""

from typing import List, Optional


def job_argv(
    *extra,
    estimator: Optional[str] = "lens",
    model="/tmp/none",
    reward="/tmp/r.py",
    engines: int = 1,
    n_samples: int = 4,
    kl: Optional[float] = None,
) -> List[str]:
    """``--actor.model_name_or_path MODEL --reward.remote_url REWARD [--algo.advantage.estimator E]
    --vllm.num_engines N --rollout.n_samples_per_prompt G [--algo.kl.init_coef KL] EXTRA...`` (``estimator=None``:
    OpenRLHF's default estimator; ``kl=None``: OpenRLHF's default KL coefficient)."""
    argv = ["--actor.model_name_or_path", str(model), "--reward.remote_url", str(reward)]
    if estimator is not None:
        argv += ["--algo.advantage.estimator", estimator]
    argv += ["--vllm.num_engines", str(engines), "--rollout.n_samples_per_prompt", str(n_samples)]
    if kl is not None:
        argv += ["--algo.kl.init_coef", str(kl)]
    return argv + [str(x) for x in extra]
