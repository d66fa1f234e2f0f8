"""CPU mode's compute dtype (``--lens.cpu_dtype``, lens_openrlhf/cpu/dtype.py): the choice on each kind of CPU, and a
real CPU-mode run under the AVX2 emulation in which every part reports float32.

The emulation is what a CPU without bf16 units looks like to torch and oneDNN: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` (torch then reports its kernels at AVX2). It is set in the job's environment, so the driver,
every Ray worker and the vLLM engine run under it.
"""

import json
import os
import subprocess
import sys

import pytest

import cpu_jobs
from lens_openrlhf.dotted import flatten
from lens_openrlhf.cpu.dtype import detect, resolve

EMULATE_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
AVX2_FLAGS = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}


@pytest.mark.parametrize(
    "flags, env, capability, want",
    [
        (AVX2_FLAGS, {}, "AVX2", "float32"),  # a real AVX2-only CPU
        (AVX2_FLAGS | {"avx512f", "avx512_bf16"}, {}, "AVX512", "bfloat16"),  # AVX512-BF16 (e.g. AMD Zen 4)
        (AVX2_FLAGS | {"avx512f", "avx512_bf16", "amx_bf16"}, {}, "AVX512", "bfloat16"),  # AMX Xeon
        (AVX2_FLAGS | {"avx512f", "avx512_bf16"}, EMULATE_AVX2, "AVX2", "float32"),  # the emulation
        (AVX2_FLAGS | {"avx512f", "avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "AVX512", "float32"),
        (AVX2_FLAGS | {"avx512f", "amx_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "AVX512", "bfloat16"),
        (AVX2_FLAGS | {"avx512f", "avx512_bf16"}, {}, "AVX2", "float32"),  # ATEN_CPU_CAPABILITY=avx2 alone
    ],
)
def test_auto_picks_bf16_only_where_the_cpu_runs_it(flags, env, capability, want):
    got = detect(flags=flags, environ=env, capability=capability)
    assert got.name == want, got.reason
    assert got.deepspeed == ("bf16" if want == "bfloat16" else "fp32")
    assert got.reason and len(got.line()) < 200


def test_explicit_choice_and_a_bad_one():
    assert resolve("float32").name == "float32" and "--lens.cpu_dtype float32" in resolve("float32").reason
    with pytest.raises(ValueError, match="--lens.cpu_dtype must be one of auto, bfloat16, float32"):
        resolve("fp8")


def test_this_machine_under_the_emulation_is_seen_as_avx2_only():
    """In a process started with the emulation's variables, auto reads torch's real kernel level and picks float32,
    whatever this machine's CPU has."""
    code = "from lens_openrlhf.cpu.dtype import detect; d = detect(); print(d.name); print(d.reason)"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **EMULATE_AVX2}, capture_output=True, text=True, check=True
    )
    assert out.stdout.splitlines()[0] == "float32", out.stdout


def test_cpu_mode_sets_every_part_from_the_choice(tmp_path):
    from lens_openrlhf import recipes
    from lens_openrlhf.coupling.parser import parse_args
    from lens_openrlhf.cpu.profile import check_and_default_args

    flags = recipes.cpu(
        tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "r.py", tmp_path, steps=1, prompts=2, n_samples=2,
        max_new_tokens=4, lr=1e-5,
    )  # fmt: skip
    args = parse_args(flags + ["--lens.cpu_dtype", "float32"])
    errors, notes = check_and_default_args(args)
    assert errors == [] and args.ds.param_dtype == "fp32" and args.lens.vllm_dtype == "float32"
    assert vars(flatten(args))["ds.param_dtype"] == "fp32"  # OpenRLHF's __main__ re-reads the flat namespace
    assert any(n.startswith("compute dtype float32: --lens.cpu_dtype float32") for n in notes)
    args = parse_args(flags + ["--lens.cpu_dtype", "bfloat16", "--lens.vllm_dtype", "float32"])
    check_and_default_args(args)
    assert args.ds.param_dtype == "bf16" and args.lens.vllm_dtype == "float32"  # a given engine dtype is kept
    args = parse_args(
        flags + ["--lens.cpu_dtype", "float32", "--ds.tensor_parallel_size", "2", "--actor.num_gpus_per_node", "2"]
    )
    errors, _ = check_and_default_args(args)
    assert any("--ds.tensor_parallel_size 2 needs bf16" in e and "--lens.cpu_dtype bfloat16" in e for e in errors)


def test_p6_loads_the_actor_in_float32(tmp_path):
    """P6: OpenRLHF's own Actor, given param_dtype 'fp32', loads a float32 model (the original refuses 'fp32')."""
    from openrlhf.models.actor import Actor
    from openrlhf.utils import utils

    from lens_openrlhf.cpu.patches import CPU
    from lens_openrlhf.localrun.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    with pytest.raises(ValueError, match="Invalid param_dtype: fp32"):
        utils.convert_to_torch_dtype("fp32")
    CPU.apply()
    actor = Actor(str(model), attn_implementation="sdpa", param_dtype="fp32")
    assert {p.dtype for p in actor.model.parameters()} == {__import__("torch").float32}


@pytest.fixture(scope="module")
def emulated_run(tmp_path_factory):
    """Two PPO steps of CPU mode in a process under the AVX2 emulation, with the weight-sync check on."""
    from lens_openrlhf.localrun.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("avx2")
    model = build_tiny_model(out / "model", seed=0)
    data = cpu_jobs.write_math_dataset(out / "train.jsonl", 8, seed=1)
    cmd = cpu_jobs.train_command(out, model, data, cpu_jobs.math_reward(), steps=2, prompts=4, n_samples=4)
    env = {**cpu_jobs.job_env(out, sync_check=True), **EMULATE_AVX2}
    with open(out / "train.log", "w") as log:
        proc = subprocess.run(cmd, env=env, cwd=str(cpu_jobs.REPO), stdout=log, stderr=subprocess.STDOUT, timeout=900)
    text = (out / "train.log").read_text()
    assert proc.returncode == 0, text[-6000:]
    syncs = [json.loads(x) for x in (out / "sync_check.jsonl").read_text().splitlines() if x.strip()]
    return text, syncs


@pytest.mark.heavy
def test_under_the_emulation_every_part_computes_in_float32(emulated_run):
    text, syncs = emulated_run
    # the one line, when the job starts; its reason is the emulation's, or on a real AVX2-only CPU the missing units
    assert detect(environ=EMULATE_AVX2).line() in text
    assert len(syncs) == 2
    for s in syncs:
        assert s["actor_dtype"] == "float32" and s["deepspeed_bf16"] is False and s["vllm_dtype"] == ["float32"], s
        # float32 end to end: the engine reloads exactly the actor's weights, so their log-probs agree to rounding
        assert s["max_abs_diff_after"] < 1e-3, s
