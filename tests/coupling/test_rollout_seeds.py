"""Same command, same numbers (lens_openrlhf/coupling/rollout_seeds.py, patches S1-S3).

Four real CPU-mode runs of ``python -m lens_openrlhf.train_ppo_ray`` (the demo's recipe, a tiny model, 3 PPO steps of 4
prompts x 4 samples, a checkpoint every step), shared by the assertions (module fixture):

  first     the command
  again     the same command (another output folder)
  engines2  the same command with --vllm.num_engines 2
  resumed   the same command with --ckpt.load_enable, started from ``again``'s step-2 checkpoint (what a run killed
            after step 2 resumes from): it runs step 3 only

Each run records what the policy trained on (``tests/helpers/step_record.py``: every micro-batch's tokens and
advantages). What is checked: the step lines (reward, group kinds, pbar, response length, loss), the micro-batches
and the final weights are identical between ``first``, ``again`` and ``engines2``; ``resumed``'s step 3 equals
``first``'s step 3 in everything sampled (the update agrees within float rounding: the micro-batch shuffle is not
checkpointed by OpenRLHF); a group's samples differ from one another (one seed per sample, not per prompt).
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import cpu_jobs as jobs
import step_record
from lens_openrlhf import patching
from lens_openrlhf.coupling import rollout_seeds
from lens_openrlhf.errors import UpstreamChanged

STEPS, PROMPTS, G = 3, 4, 4
RUN_TIMEOUT_S = 420
STEP_TAGS = (
    "train/reward",
    "train/lens/negative_group_ratio",
    "train/lens/mixed_group_ratio",
    "train/lens/mean_pbar",
    "train/lens/nonzero_adv_frac",
    "train/policy_loss",
    "train/rollout/response_length_mean",
    "train/actor_grad_norm",
)


# ---- the seeds themselves (no process started) ------------------------------------------------------------------
def test_seeds_depend_on_every_part_and_on_nothing_else():
    base = rollout_seeds.prompt_seed(42, "train", 7, "What is 1 + 2?")
    assert base == rollout_seeds.prompt_seed(42, "train", 7, "What is 1 + 2?")
    others = {
        rollout_seeds.prompt_seed(43, "train", 7, "What is 1 + 2?"),
        rollout_seeds.prompt_seed(42, "eval", 7, "What is 1 + 2?"),
        rollout_seeds.prompt_seed(42, "train", 8, "What is 1 + 2?"),
        rollout_seeds.prompt_seed(42, "train", 7, "What is 1 + 3?"),
    }
    assert base not in others and len(others) == 4
    seeds = [
        [rollout_seeds.sample_seed(rollout_seeds.prompt_seed(42, "train", 7 + i, p), j) for j in range(8)]
        for i, p in enumerate(["What is 1 + 2?", "x"])
    ]
    assert seeds[0][0] == rollout_seeds.sample_seed(base, 0)
    assert len({s for row in seeds for s in row}) == 16
    assert all(0 <= s < 2**31 for row in seeds for s in row)


def test_seeds_are_the_same_in_another_process():
    """blake2b, not Python's salted hash(): a Ray worker computes the seeds the driver would."""
    code = "from lens_openrlhf.coupling import rollout_seeds as r; print(r.prompt_seed(42, 'train', 7, 'p'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) == rollout_seeds.prompt_seed(42, "train", 7, "p")


class _Method:
    def __init__(self, calls, name):
        self.calls, self.name = calls, name

    def remote(self, **kwargs):
        self.calls.append((self.name, kwargs))
        return len(self.calls)


class _Handle:
    """An engine handle stand-in that records the calls OpenRLHF's real dispatch makes."""

    def __init__(self, calls):
        self.calls = calls
        self.generate_responses = _Method(calls, "generate_responses")
        self.get_num_unfinished_requests = _Method(calls, "get_num_unfinished_requests")


def _generator(calls, engines=2, estimator="group_norm", seeds="per_sample"):
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    gen = SamplesGenerator.__new__(SamplesGenerator)
    args = SimpleNamespace(
        train=SimpleNamespace(seed=42),
        rollout=SimpleNamespace(n_samples_per_prompt=4),
        algo=SimpleNamespace(
            advantage=SimpleNamespace(is_correction_level="off", estimator=estimator),
            lens=SimpleNamespace(logprob_source="vllm"),
        ),
        lens=SimpleNamespace(rollout_seeds=seeds),
    )
    gen.args, gen.tokenizer, gen.vllm_engines = args, None, [_Handle(calls) for _ in range(engines)]
    return gen


def test_openrlhfs_dispatch_sends_each_prompt_its_seed(monkeypatch):
    """OpenRLHF's real ``_dispatch_prompts_to_vllm`` under S2 (Ray's get/wait stood in): each prompt's request
    carries ``prompt_seed(seed, stream, position, prompt)``, positions continue across dispatches, engines untouched."""
    from lens_openrlhf.coupling.patches import COUPLING
    from openrlhf.trainer.ppo_utils import samples_generator

    COUPLING.apply()
    monkeypatch.setattr(samples_generator.ray, "get", lambda refs: [0 for _ in refs])
    calls = []
    gen = _generator(calls)
    engines = list(gen.vllm_engines)
    gen._dispatch_prompts_to_vllm(["p0", "p1", "p2"], ["a", "b", "c"], max_new_tokens=8)
    gen._dispatch_prompts_to_vllm(["p3"], ["d"], max_new_tokens=8)
    sent = [kw for name, kw in calls if name == "generate_responses"]
    assert [kw["prompt"] for kw in sent] == ["p0", "p1", "p2", "p3"]
    assert [kw["sampling_params"].seed for kw in sent] == [
        rollout_seeds.prompt_seed(42, "train", i, p) for i, p in enumerate(["p0", "p1", "p2", "p3"])
    ]
    assert gen.vllm_engines == engines
    assert all(kw["sampling_params"].logprobs is None for kw in sent)  # GRPO reads no pbar: OpenRLHF's request


@pytest.mark.parametrize("seeds", ["per_sample", "engine"])
def test_the_trainers_args_decide_seeds_and_log_probs(monkeypatch, seeds):
    """S1-S3 are applied in every process; what S2 sends is read from the trainer's own args, where it runs:
    ``--lens.rollout_seeds`` for the seeds, the estimator and ``--algo.lens.logprob_source`` for ``logprobs=1``
    (LENS reads pbar from vLLM's log-probs), and OpenRLHF's own request when neither applies."""
    from lens_openrlhf.coupling.patches import COUPLING
    from openrlhf.trainer.ppo_utils import samples_generator

    COUPLING.apply()
    monkeypatch.setattr(samples_generator.ray, "get", lambda refs: [0 for _ in refs])
    for estimator, logprobs in (("lens", 1), ("group_norm", None)):
        calls = []
        gen = _generator(calls, estimator=estimator, seeds=seeds)
        gen._dispatch_prompts_to_vllm(["p0", "p1"], ["a", "b"], max_new_tokens=8)
        sent = [kw["sampling_params"] for name, kw in calls if name == "generate_responses"]
        assert [sp.logprobs for sp in sent] == [logprobs] * 2, estimator
        want = [rollout_seeds.prompt_seed(42, "train", i, p) for i, p in enumerate(["p0", "p1"])]
        assert [sp.seed for sp in sent] == (want if seeds == "per_sample" else [None, None]), estimator
    assert rollout_seeds.seeded(gen.args) == (seeds == "per_sample")
    gen.args.algo.lens.logprob_source = "actor"  # pbar from the actor's own log-probs: nothing asked of vLLM
    calls.clear()
    gen.args.algo.advantage.estimator = "lens"
    gen._dispatch_prompts_to_vllm(["p0"], ["a"], max_new_tokens=8)
    assert [kw["sampling_params"].logprobs for name, kw in calls if name == "generate_responses"] == [None]


def test_a_dispatch_that_no_longer_calls_per_prompt_fails_by_name(monkeypatch):
    from lens_openrlhf.coupling.patches import COUPLING

    COUPLING.apply()
    gen = _generator([])
    monkeypatch.setitem(
        COUPLING._originals, "S2", lambda self, prompts, labels, **kw: [e.generate_responses for e in self.vllm_engines]
    )
    with pytest.raises(UpstreamChanged, match="S2"):
        gen._dispatch_prompts_to_vllm(["p0", "p1"], ["a", "b"])


def test_s1_to_s3_are_applied_in_every_process_without_a_tag():
    """No environment variable tells a worker whether to seed: S1-S3 carry no tag, and args without ``lens`` (OpenRLHF's
    own tests) or with ``--lens.rollout_seeds engine`` get OpenRLHF's seeding."""
    from lens_openrlhf.coupling.patches import COUPLING

    assert all(COUPLING[pid].tag is None for pid in ("S1", "S2", "S3"))
    before = patching.applied()
    COUPLING.apply(tags=())
    assert {"S1", "S2", "S3"} <= set(COUPLING.applied())
    assert not rollout_seeds.seeded(SimpleNamespace(train=SimpleNamespace(seed=1)))
    assert not rollout_seeds.seeded(SimpleNamespace(lens=SimpleNamespace(rollout_seeds="engine")))
    assert rollout_seeds.seeded(SimpleNamespace(lens=SimpleNamespace(rollout_seeds="per_sample")))
    patching.revert_all(before)


# ---- four real runs ---------------------------------------------------------------------------------------------
def _run(root: Path, name: str, cmd, out: Path):
    env = step_record.job_env(jobs.job_env(out, sync_check=False), out / "step")
    t0 = time.time()
    with open(root / f"{name}.log", "w") as log:
        proc = subprocess.run(
            cmd, env=env, cwd=str(jobs.REPO), stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
        )
    text = (root / f"{name}.log").read_text()
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}) after {time.time() - t0:.0f} s:\n{text[-5000:]}"
    scalars = jobs.read_tensorboard(out / "tensorboard")
    return SimpleNamespace(
        out=out,
        log=text,
        steps={s: {t: scalars[t][s] for t in STEP_TAGS} for s in scalars["train/reward"]},
        records=step_record.read(out / "step"),
        weights=out / "checkpoint" / "model.safetensors",
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("rollout_seeds")
    model = build_tiny_model(root / "model", seed=0)
    data = jobs.write_math_dataset(root / "data" / "train.jsonl", STEPS * PROMPTS, seed=1)

    def cmd(out, *extra):
        flags = ["--ckpt.save_steps", "1", "--ckpt.load_enable", *extra]
        return jobs.train_command(
            out, model, data, jobs.math_reward(), steps=STEPS, prompts=PROMPTS, n_samples=G, extra=flags
        )

    got = {}
    for name, extra in (("first", ()), ("again", ()), ("engines2", ("--vllm.num_engines", "2"))):
        got[name] = _run(root, name, cmd(root / name), root / name)
    # what a run killed after its step-2 checkpoint resumes from: again's checkpoint folder as it was then
    resumed = root / "resumed"
    shutil.copytree(root / "again" / "ckpt", resumed / "ckpt")
    actor = resumed / "ckpt" / "_actor"
    shutil.rmtree(actor / f"global_step{STEPS}")
    (actor / "latest").write_text(f"global_step{STEPS - 1}")
    got["resumed"] = _run(root, "resumed", cmd(resumed), resumed)
    return got


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _same_weights(a, b):
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)


@pytest.mark.heavy
@pytest.mark.parametrize("other", ["again", "engines2"])
def test_the_same_command_gives_the_same_steps_batches_and_weights(runs, other):
    a, b = runs["first"], runs[other]
    assert sorted(a.steps) == list(range(1, STEPS + 1))
    assert a.steps == b.steps, json.dumps({"first": a.steps, other: b.steps}, indent=1)
    assert [(r["sequences"], r["advantages"]) for r in a.records] == [
        (r["sequences"], r["advantages"]) for r in b.records
    ]
    assert _same_weights(a.weights, b.weights)


@pytest.mark.heavy
def test_a_groups_samples_are_drawn_with_different_seeds(runs):
    """One seed per prompt would give G identical samples: the tiny random model's 24-token answers all differ."""
    sequences = [tuple(s) for r in runs["first"].records for s in r["sequences"]]
    assert len(sequences) == STEPS * PROMPTS * G
    assert len(set(sequences)) == len(sequences)


@pytest.mark.heavy
def test_a_resumed_run_continues_the_seed_sequence(runs):
    """Step 3 after a resume samples what step 3 of the uninterrupted run sampled: the step line (reward, group
    kinds, pbar, response length) is identical. The policy's update is equal within float rounding only: OpenRLHF
    shuffles the micro-batches of a step with the policy rank's global RNG, which its checkpoint does not save (a
    resumed rank draws another order, so the sums run in another order)."""
    first, resumed = runs["first"], runs["resumed"]
    assert "training prompts start at position 0" in first.log
    assert f"training prompts start at position {(STEPS - 1) * PROMPTS}" in resumed.log
    assert sorted(resumed.steps) == [STEPS]
    sampled = [t for t in STEP_TAGS if t not in ("train/policy_loss", "train/actor_grad_norm")]
    assert {t: resumed.steps[STEPS][t] for t in sampled} == {t: first.steps[STEPS][t] for t in sampled}
    trained = lambda records: sorted(  # noqa: E731
        (tuple(s), tuple(a)) for r in records for s, a in zip(r["sequences"], r["advantages"])
    )
    assert trained(resumed.records) == trained(first.records[-len(resumed.records) :])
    grad = [run.steps[STEPS]["train/actor_grad_norm"] for run in (first, resumed)]
    assert grad[1] == pytest.approx(grad[0], rel=1e-3)
    # the seeding is saved with each checkpoint (OpenRLHF's client states, in DeepSpeed's model-states file)
    import torch

    for step in (1, 2):
        states = first.out / "ckpt" / "_actor" / f"global_step{step}" / "mp_rank_00_model_states.pt"
        saved = torch.load(states, weights_only=False, map_location="cpu")
        assert saved[rollout_seeds.RECORD] == {"train_seed": 42, "next_train_position": step * PROMPTS}
        assert saved["total_consumed_prompts"] == step * PROMPTS
    assert "this checkpoint was written with --train.seed" not in resumed.log  # the same seed: no warning
