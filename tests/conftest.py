"""Shared test set-up.

- flash-attn cannot exist on CPU: the pure-tensor shim in lens_openrlhf/cpu_shims (flash_attn.bert_padding
  and flash_attn.utils.distributed.all_gather, the only symbols OpenRLHF touches on import) is put on
  sys.path when the real package is absent, so the REAL OpenRLHF modules import here.
- Nothing reaches a hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, W&B disabled.
- Property tests are reproducible: the hypothesis profile "ci" (loaded unless HYPOTHESIS_PROFILE names
  another) draws the same examples on every machine and every run (derandomize: the seed is a hash of the
  test), keeps no example database (a failure found on one machine is not replayed on another only), and has
  no deadline (a loaded 2-core machine is slow, not wrong). A failure found this way is kept in its test as
  an explicit ``@example``. ``HYPOTHESIS_PROFILE=explore`` searches randomly, with more examples, to find new ones.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))  # cpu_jobs, step_record: tests' own helpers
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from lens_openrlhf.cpu_shims import ensure_flash_attn_importable  # noqa: E402

ensure_flash_attn_importable()


import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None, max_examples=100, deadline=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def make_experiences():
    """Factory of REAL OpenRLHF `Experience` objects for a flat list of rewards (prompt-major order),
    shuffled into micro-batches of `micro` the way OpenRLHF splits a rollout (`index` = original position).

    Each has an action mask of random length, zero KL, the actor's log-probs (`action_log_probs`) and vLLM's
    (`rollout_log_probs` = actor + small noise, `-inf` on padding, which must never be read).
    """

    def make(rewards, micro=3, T=7, seed=0):
        from openrlhf.trainer.ppo_utils.experience import Experience

        g = torch.Generator().manual_seed(seed)
        flat = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
        B = flat.numel()
        order = torch.randperm(B, generator=g).tolist()
        exps = []
        for s in range(0, B, micro):
            ids = order[s : s + micro]
            n = len(ids)
            lengths = torch.randint(1, T + 1, (n,), generator=g)
            mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
            actor_lp = -torch.rand(n, T, generator=g) * 2
            rollout_lp = actor_lp + 0.01 * torch.randn(n, T, generator=g)
            rollout_lp[~mask] = float("-inf")
            exps.append(
                Experience(
                    index=ids,
                    rewards=flat[ids].clone(),
                    action_mask=mask,
                    kl=torch.zeros(n, T),
                    action_log_probs=actor_lp,
                    rollout_log_probs=rollout_lp,
                    response_length=lengths.float(),
                    info={},
                )
            )
        return exps

    return make


@pytest.fixture(autouse=True, scope="module")
def _revert_patches_after_module():
    """Patches a module's fixtures applied are reverted when the module ends (results never depend on order)."""
    yield
    from lens_openrlhf import patching

    patching.revert_all()


@pytest.fixture(autouse=True)
def _revert_patches_after_test():
    """Patches a test applied are reverted after it (those of module fixtures stay for the module)."""
    from lens_openrlhf import patching

    before = patching.applied()
    yield
    patching.revert_all(since=before)


@pytest.fixture(scope="session")
def gym_dir(tmp_path_factory):
    """reasoning-gym data as ``python -m lens_openrlhf.data gym`` writes it (40 train and 8 test problems per task
    and level, 100 warm-up rows per level, seed 3), built once per session; read-only for the tests."""
    from lens_openrlhf.data.cli import main as data_main

    out = tmp_path_factory.mktemp("gym")
    argv = ["gym", "--out-dir", str(out), "--train-per-level", "40", "--test-per-level", "8", "--seed", "3"]
    assert data_main(argv + ["--warmup-per-level", "100"]) == 0
    return out


@pytest.fixture(scope="session")
def script_submissions(tmp_path_factory):
    """Each example training script's ``DRY_RUN=1`` submission line (``ray job submit ... -- python -m ...``), run once
    per session from a directory outside the repository, as a user runs it: {script name: (line, that directory)}."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    cwd = tmp_path_factory.mktemp("user_dir")
    out = {}
    for script in sorted((repo / "examples" / "scripts").glob("train_*.sh")):
        res = subprocess.run(
            ["bash", str(script)], cwd=cwd, capture_output=True, text=True, timeout=300,
            env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable},
        )  # fmt: skip
        assert res.returncode == 0, (script.name, res.stderr[-3000:])
        out[script.name] = (res.stdout.strip(), cwd)
    return out


# ---- two tiers: `make test` (everything, what CI runs) and `make test-quick` (-m "not heavy") --------------------
HEAVY = "heavy"
_JOB_MODULES = ("lens_openrlhf.train_ppo_ray", "lens_openrlhf.demo", "lens_openrlhf.evaluation")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"{HEAVY}: starts Ray, vLLM, DeepSpeed or a training job, trains a model, or runs many subprocesses for "
        f"tens of seconds (`make test-quick`, -m 'not {HEAVY}', leaves it out)",
    )


def _refuse(what: str):
    raise RuntimeError(
        f"this test {what}, which the quick tier (-m 'not {HEAVY}') leaves out: mark it @pytest.mark.{HEAVY} "
        f"(or its module: pytestmark = pytest.mark.{HEAVY})"
    )


def _heavy_command(words, env) -> str:
    """What makes a command heavy (a Ray CLI call, one of our jobs, a script submission), or ''."""
    text = " ".join(map(str, words))
    if words and Path(str(words[0])).name == "ray":
        return "runs the Ray CLI"
    if "--help" not in words and any(w in _JOB_MODULES for w in map(str, words)):
        return f"runs a job ({text[:100]})"
    if "rehearse_on_cpu" in text or ("examples/scripts/" in text and (env or os.environ).get("DRY_RUN") != "1"):
        return f"submits a script ({text[:100]})"
    return ""


@pytest.fixture(autouse=True, scope="session")
def _quick_tier_guard(request):
    """In the quick tier, a test that starts Ray, a DeepSpeed engine, a vLLM engine process or a job fails with a
    message saying how to mark it, so the tier stays what it says."""
    if f"not {HEAVY}" not in (request.config.option.markexpr or ""):
        yield
        return
    import multiprocessing.process
    import subprocess

    import deepspeed
    import ray

    mp = pytest.MonkeyPatch()
    mp.setattr(ray, "init", lambda *a, **k: _refuse("starts Ray"))
    mp.setattr(deepspeed, "initialize", lambda *a, **k: _refuse("starts a DeepSpeed engine"))
    start = multiprocessing.process.BaseProcess.start

    def guarded_start(self):
        if getattr(getattr(self, "_target", None), "__module__", "").startswith("vllm"):
            _refuse("starts a vLLM engine process")
        start(self)

    popen_init = subprocess.Popen.__init__

    def guarded_popen(self, args, *a, **k):
        words = [args] if isinstance(args, (str, os.PathLike)) else list(args)
        what = _heavy_command(words, k.get("env"))
        if what:
            _refuse(what)
        popen_init(self, args, *a, **k)

    mp.setattr(multiprocessing.process.BaseProcess, "start", guarded_start)
    mp.setattr(subprocess.Popen, "__init__", guarded_popen)
    yield
    mp.undo()
