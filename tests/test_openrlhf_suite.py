"""OpenRLHF's own test suite is our judge too: it passes as installed and with every patch of ours live.

The openrlhf 0.11.2 wheel installs its test suite as a top-level ``tests`` package next to ``openrlhf`` in
site-packages (16 files: reward shaping, loss aggregation, experience, samples generator, PPO trainer, agent,
eval dataloader, ...). It runs here three times, in subprocesses started outside this repository (our
``tests/`` has no ``__init__.py``; a regular package wins over a namespace portion, so ``tests`` is theirs):

- ``installed``: as installed;
- ``patched``: every entry of the coupling table applied at session start (all tags: what applies outside CPU
  mode under some flag), by the plugin below;
- ``cpu``: the CPU-mode table too (P1-P6), applied before the coupling table as the Ray worker hook does.

Each run must pass in full, with the same tests collected and the same skips, and the patches must still be
live when the session ends. The counts (collected, passed, skipped and why) are printed to the terminal.

Most of their tests load an OpenRLHF module from its file path (``spec_from_file_location``), a copy that no
patch of ours reaches; so the cases of ``test_reward_shaping`` (experience_maker.py: patch A1) and the
checkpoint-metric cases of ``test_ppo_trainer`` (ppo_trainer.py: patch T2) are repeated below on the real,
patched classes, with OpenRLHF's estimators and the same expected values.
"""

import importlib.util
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
import torch

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

REPO = Path(__file__).resolve().parent.parent
RUNS = ("installed", "patched", "cpu")

PLUGIN = '''"""OpenRLHF's own suite with lens_openrlhf's patches live (written by tests/test_openrlhf_suite.py)."""
import json
import os


def _status():
    from lens_openrlhf.coupling.patches import COUPLING

    out = {"coupling": COUPLING.status()}
    if os.environ["LENS_SUITE_PATCHES"] == "cpu":
        from lens_openrlhf.cpu import CPU

        out["cpu"] = CPU.status()
    return out


def pytest_configure(config):
    mode = os.environ["LENS_SUITE_PATCHES"]
    if mode == "installed":
        return
    from lens_openrlhf.cpu_shims import ensure_flash_attn_importable

    ensure_flash_attn_importable()  # what every process that applies our patches does first
    from lens_openrlhf.coupling.patches import COUPLING, ROLLOUT_LOGPROBS, VLLM_DTYPE

    if mode == "cpu":
        from lens_openrlhf.cpu import CPU

        CPU.apply()
    COUPLING.apply(tags=(ROLLOUT_LOGPROBS, VLLM_DTYPE))
    config._lens_status = {"start": _status()}


def pytest_unconfigure(config):
    status = getattr(config, "_lens_status", None)
    if status is not None:
        status["end"] = _status()
        with open(os.environ["LENS_SUITE_STATUS"], "w") as f:
            json.dump(status, f)
'''


def _installed_suite() -> Path:
    site = Path(importlib.util.find_spec("openrlhf").submodule_search_locations[0]).parent
    suite = site / "tests"
    assert (suite / "__init__.py").is_file(), f"the openrlhf wheel's test suite is not at {suite}"
    return suite


def _junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    skips = {}
    for c in cases:
        s = c.find("skipped")
        if s is not None:
            skips[f"{c.get('classname')}::{c.get('name')}"] = s.get("message", "")
    return {
        "collected": int(suite.get("tests")),
        "failures": int(suite.get("failures")),
        "errors": int(suite.get("errors")),
        "skipped": int(suite.get("skipped")),
        "ids": sorted(f"{c.get('classname')}::{c.get('name')}" for c in cases),
        "skips": skips,
    }


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory):
    """The three runs, started together (each about 20 s of CPU)."""
    import json

    suite = _installed_suite()
    tmp = tmp_path_factory.mktemp("openrlhf_suite")
    (tmp / "lens_suite_plugin.py").write_text(PLUGIN)
    started = {}
    for mode in RUNS:
        d = tmp / mode
        d.mkdir()
        path = [str(tmp)] + ([] if mode == "installed" else [str(REPO)])
        env = dict(
            os.environ,
            LENS_SUITE_PATCHES=mode,
            LENS_SUITE_STATUS=str(d / "status.json"),
            PYTHONPATH=os.pathsep.join(path),  # the plugin; our package for the patched runs; nothing else
            PYTHONDONTWRITEBYTECODE="1",  # nothing written into site-packages
        )
        cmd = [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", "-p", "lens_suite_plugin"]
        cmd += ["-rs", f"--junitxml={d / 'junit.xml'}"]
        with open(d / "log.txt", "w") as log:
            started[mode] = (
                d,
                time.time(),
                subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT),
            )
    runs = {}
    for mode, (d, t0, proc) in started.items():
        proc.wait(timeout=900)
        log = (d / "log.txt").read_text()
        assert (d / "junit.xml").is_file(), f"{mode}: no report\n{log[-4000:]}"
        runs[mode] = dict(_junit(d / "junit.xml"), rc=proc.returncode, log=log, seconds=time.time() - t0)
        status = d / "status.json"
        runs[mode]["status"] = json.loads(status.read_text()) if status.is_file() else None
    return runs


def test_openrlhfs_suite_passes_as_installed_and_with_our_patches(suite_runs, capsys):
    with capsys.disabled():
        print()
        for mode, r in suite_runs.items():
            passed = r["collected"] - r["failures"] - r["errors"] - r["skipped"]
            why = "; ".join(sorted(set(r["skips"].values()))) or "none"
            print(
                f"OpenRLHF's suite, {mode}: {r['collected']} collected, {passed} passed, {r['skipped']} skipped "
                f"(reasons: {why}), {r['failures']} failed, {r['errors']} errors; {r['seconds']:.0f} s wall"
            )
    for mode, r in suite_runs.items():
        assert r["rc"] == 0 and r["failures"] == r["errors"] == 0, f"{mode}:\n{r['log'][-6000:]}"
    base = suite_runs["installed"]
    assert base["collected"] >= 200  # 221 in 0.11.2: the suite really ran
    for mode in ("patched", "cpu"):
        assert suite_runs[mode]["ids"] == base["ids"], mode  # the same tests ...
        assert suite_runs[mode]["skips"] == base["skips"], mode  # ... none skipped because of a patch


def test_every_patch_was_live_from_start_to_end(suite_runs):
    from lens_openrlhf.coupling import COUPLING
    from lens_openrlhf.cpu import CPU

    assert suite_runs["installed"]["status"] is None  # nothing of ours in the installed run
    for mode in ("patched", "cpu"):
        status = suite_runs[mode]["status"]
        for when in ("start", "end"):  # their monkeypatching left ours in place
            assert status[when]["coupling"] == {p.id: True for p in COUPLING.entries}, (mode, when)
    assert "cpu" not in suite_runs["patched"]["status"]["start"]
    for when in ("start", "end"):
        assert suite_runs["cpu"]["status"][when]["cpu"] == {p.id: True for p in CPU.entries}, when


# ------------------------------------------------------------------------------------------------
# test_reward_shaping's cases (they load experience_maker.py by path) on the real, patched class
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def maker_class():
    """OpenRLHF's RemoteExperienceMaker with every coupling patch applied (A1 replaces the method)."""
    from lens_openrlhf.coupling import advantages
    from lens_openrlhf.coupling.patches import COUPLING, ROLLOUT_LOGPROBS, VLLM_DTYPE
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    COUPLING.apply(tags=(ROLLOUT_LOGPROBS, VLLM_DTYPE))
    assert RemoteExperienceMaker.compute_advantages_and_returns is advantages.compute_advantages_and_returns
    return RemoteExperienceMaker


def _maker(cls, estimator, **args):
    maker = cls.__new__(cls)  # as their test builds it
    maker.advantage_estimator = estimator
    maker.kl_ctl = SimpleNamespace(value=0.0)
    maker.strategy = SimpleNamespace(args=SimpleNamespace(**args))
    return maker


@pytest.mark.parametrize(
    "estimator", ["gae", "reinforce", "group_norm", "rloo", "reinforce_baseline", "dr_grpo", "flash_reinforce"]
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.int64])
def test_reward_shaping_matches_fp32_reference(maker_class, estimator, dtype):
    from openrlhf.trainer.ppo_utils.experience import Experience

    rewards = torch.tensor([1, 1, 1, 1.0078125] if dtype != torch.int64 else [0, 0, 0, 1], dtype=dtype)
    maker = _maker(
        maker_class,
        estimator,
        rollout=SimpleNamespace(n_samples_per_prompt=4),
        reward=SimpleNamespace(clip_range=None),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator=estimator, gamma=1.0, lambd=1.0, no_std_norm=True)),
    )
    experience = Experience(
        index=list(range(4)),
        rewards=rewards,
        action_mask=torch.ones(4, 2),
        kl=torch.zeros(4, 2),
        values=torch.zeros(4, 2),
        info={"reward": rewards.clone()},
    )
    result = maker.compute_advantages_and_returns([experience])[0]
    reference = rewards.float() - rewards.float().mean()
    if estimator == "rloo":
        reference *= 4 / 3
    elif estimator == "group_norm":
        reference /= rewards.float().std() + 1e-9
    torch.testing.assert_close(result.advantages, reference[:, None].expand(-1, 2))
    assert result.rewards.dtype == result.info["reward"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64])
def test_constant_rewards_have_finite_zero_group_advantages(maker_class, dtype):
    from openrlhf.trainer.ppo_utils.experience import Experience

    maker = _maker(
        maker_class,
        "group_norm",
        rollout=SimpleNamespace(n_samples_per_prompt=2),
        reward=SimpleNamespace(clip_range=None),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator="group_norm", gamma=1.0)),
    )
    experience = Experience(
        index=[0, 1], rewards=torch.zeros(2, dtype=dtype), action_mask=torch.ones(2, 1), kl=torch.zeros(2, 1), info={}
    )
    result = maker.compute_advantages_and_returns([experience])[0]
    torch.testing.assert_close(result.advantages, torch.zeros(2, 1))


@pytest.mark.parametrize("dtype,gap", [(torch.bfloat16, 1 / 128), (torch.float64, 1e-8)])
def test_group_advantages_produce_reference_policy_gradient(maker_class, dtype, gap):
    from openrlhf.models.loss import PolicyLoss
    from openrlhf.trainer.ppo_utils.experience import Experience

    rewards = torch.tensor([1, 1, 1, 1 + gap], dtype=dtype)
    maker = _maker(
        maker_class,
        "group_norm",
        rollout=SimpleNamespace(n_samples_per_prompt=4),
        reward=SimpleNamespace(clip_range=None),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator="group_norm", gamma=1.0)),
    )
    mask = torch.ones(4, 2)
    experience = Experience(index=list(range(4)), rewards=rewards, action_mask=mask, kl=torch.zeros(4, 2), info={})
    advantage = maker.compute_advantages_and_returns([experience])[0].advantages
    log_probs = torch.zeros(4, 2, requires_grad=True)
    loss, *_ = PolicyLoss()(log_probs, log_probs.detach(), advantage, mask)
    loss.backward()
    reference = (rewards.double() - rewards.double().mean()) / (rewards.double().std() + 1e-9)
    torch.testing.assert_close(advantage, reference.float()[:, None].expand(-1, 2))
    torch.testing.assert_close(log_probs.grad, -reference.float()[:, None].expand(-1, 2) / mask.sum())


def test_integer_rewards_preserve_fractional_length_penalty(maker_class):
    from openrlhf.trainer.ppo_utils.experience import Experience

    maker = _maker(
        maker_class,
        "dr_grpo",
        rollout=SimpleNamespace(n_samples_per_prompt=2, max_new_tokens=2),
        data=SimpleNamespace(max_len=3),
        reward=SimpleNamespace(clip_range=None, overlong_buffer_len=1, overlong_penalty_factor=0.5),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator="dr_grpo", gamma=1.0)),
    )
    experience = Experience(
        index=[0, 1],
        rewards=torch.tensor([1, 1]),
        action_mask=torch.ones(2, 2),
        kl=torch.zeros(2, 2),
        response_length=torch.tensor([2, 1]),
        info={"reward": torch.tensor([1, 1])},
    )
    result = maker.compute_advantages_and_returns([experience])[0]
    torch.testing.assert_close(result.rewards, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(result.info["reward"], result.rewards)
    torch.testing.assert_close(result.advantages, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))


def test_flash_reinforce_centers_on_the_rollout_batch_mean_without_whitening(maker_class):
    from openrlhf.trainer.ppo_utils.experience import Experience

    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    maker = _maker(
        maker_class,
        "flash_reinforce",
        rollout=SimpleNamespace(n_samples_per_prompt=1),
        reward=SimpleNamespace(clip_range=None),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator="flash_reinforce", gamma=1.0, no_std_norm=False)),
    )
    experience = Experience(
        index=list(range(4)), rewards=rewards, action_mask=torch.ones(4, 2), kl=torch.zeros(4, 2), info={}
    )
    result = maker.compute_advantages_and_returns([experience])[0]
    torch.testing.assert_close(result.advantages, torch.tensor([0.75, -0.25, -0.25, -0.25])[:, None].expand(-1, 2))
    torch.testing.assert_close(result.advantages, result.returns)


# ------------------------------------------------------------------------------------------------
# test_ppo_trainer's checkpoint-metric cases (ppo_trainer.py loaded by path) on the real, patched class (T2)
# ------------------------------------------------------------------------------------------------
def _checkpoint_trainer():
    from lens_openrlhf.coupling import preemption
    from lens_openrlhf.coupling.patches import COUPLING
    from openrlhf.trainer.ppo_trainer import BasePPOTrainer

    COUPLING.apply()
    assert BasePPOTrainer.save_logs_and_checkpoints is preemption.save_logs_and_checkpoints
    trainer = BasePPOTrainer.__new__(BasePPOTrainer)
    trainer.args = SimpleNamespace(logger=SimpleNamespace(logging_steps=1), ckpt=SimpleNamespace(save_steps=1))
    trainer.actor_model_group = MagicMock()
    trainer.actor_model_group.async_run_method.return_value = []
    trainer.critic_model_group = None
    trainer.wandb_logger = trainer.tensorboard_logger = None
    trainer.best_eval_metric_key = ""
    trainer.best_eval_metric_value = float("-inf")
    trainer._latest_eval_metric_value = None
    return trainer


@pytest.mark.parametrize("best,latest", [(0.8, 0.5), (0.0, -0.2), (-0.2, -0.5)])
def test_regular_checkpoint_restores_best_and_latest_metrics(tmp_path, monkeypatch, best, latest):
    import ray
    from openrlhf.trainer import ppo_trainer

    # their fixture's Ray: ray.get returns its argument (the real one would start a cluster for ray.get([]));
    # T2 reads the real Ray, finds no job (no RunControl) and calls OpenRLHF's method
    monkeypatch.setattr(ppo_trainer, "ray", SimpleNamespace(get=lambda value: value))
    assert not ray.is_initialized()
    trainer = _checkpoint_trainer()
    trainer.save_best_checkpoint({"eval_math_pass1": best}, 1)
    trainer.save_best_checkpoint({"eval_math_pass1": latest}, 2)
    trainer.save_logs_and_checkpoints(3, client_states={"global_step": 3})
    saved = trainer.actor_model_group.async_run_method.call_args.kwargs["client_states"]
    path = tmp_path / "client_state.pt"
    torch.save(saved, path)

    resumed = _checkpoint_trainer()
    resumed.restore_best_checkpoint_state(torch.load(path, weights_only=True))
    assert resumed.best_eval_metric_key == "eval_math_pass1"
    assert resumed.best_eval_metric_value == best
    assert resumed._latest_eval_metric_value == latest
    resumed.save_best_checkpoint({"eval_math_pass1": (best + latest) / 2}, 4)
    resumed.actor_model_group.async_run_method.assert_not_called()
    resumed.save_best_checkpoint({"eval_math_pass1": best + 0.1}, 5)
    assert resumed.actor_model_group.async_run_method.call_args.kwargs["tag"] == "best_global_step5"
    assert not ray.is_initialized()  # T2 started no Ray cluster of its own
