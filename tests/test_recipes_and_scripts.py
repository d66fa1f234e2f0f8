"""Every example script's training command parses with the real parser (OpenRLHF 0.11.2's own, extended)
and passes our validation, and its recipe matches the paper's table (../shared/LENS.md, appendix D)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf import coupling as A
from lens_openrlhf.estimators import ADV_ESTIMATORS

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "examples" / "scripts").glob("train_*.sh"))
PAPER = {  # LENS.md "The paper's recipe"
    "rollout.n_samples_per_prompt": 16,
    "train.batch_size": 512,  # 32 prompts x 16 samples per update
    "rollout.batch_size": 128,  # 4 off-policy updates
    "actor.eps_clip": 0.2,
    "actor.loss_agg_mode": "seq-mean-token-mean",  # eq. 3: mean over each response's tokens, then over responses
    "algo.kl.init_coef": 0.0,  # no KL
    "rollout.temperature": 1.0,
    "rollout.top_p": 1.0,
    "rollout.max_new_tokens": 4096,
    "eval.temperature": 1.0,
    "eval.n_samples_per_prompt": 16,
}
LR = {"qwen2.5_3b": 1e-6, "llama3.1_8b": 3e-7}


@pytest.fixture(scope="module")
def parser():
    return A.build_parser()


def test_there_are_scripts_for_every_paper_run():
    names = {p.name for p in SCRIPTS}
    for want in (
        "train_lens_qwen2.5_3b.sh",
        "train_grpo_qwen2.5_3b.sh",
        "train_lens_llama3.1_8b.sh",
        "train_grpo_llama3.1_8b.sh",
        "train_lens_mixed_only_llama3.1_8b.sh",
        "train_lens_negative_only_llama3.1_8b.sh",
        "train_lens_multinode.sh",
        "train_lens_large_model.sh",
        "train_lens_llama3.1_70b.sh",
    ):
        assert want in names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_flags_parse_and_match_the_paper(parser, script):
    out = subprocess.run(
        ["bash", str(script)],
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    argv = shlex.split(out.stdout)
    assert argv[:3] == ["python", "-m", "lens_openrlhf.train_ppo_ray"]
    flat, args = A.parse_args(argv[3:], parser=parser)  # exits (fails the test) on a stale or bad flag
    flat = vars(flat)
    for key, value in PAPER.items():
        assert flat[key] == value, (script.name, key, flat[key])
    est = args.algo.advantage.estimator
    stem = script.stem.removeprefix("train_")
    assert stem.startswith(est) or est == "lens"
    spec = ADV_ESTIMATORS.get(est)
    for name, opt in spec.options.items() if spec else ():  # stated at the registry default (the paper's)
        assert getattr(args.algo.lens, name) == opt.default
    for tag, lr in LR.items():
        if tag in script.name:
            assert args.actor.adam.lr == lr
    assert args.reward.remote_url.endswith("lens_openrlhf/rewards/math_reward.py")
    if "llama" in script.name:
        assert args.data.apply_chat_template and "math_test.llama" in args.eval.dataset
    if "qwen" in script.name:
        assert not args.data.apply_chat_template and "math_test.qwen" in args.eval.dataset
    if args.train.colocate_all:
        assert (
            args.actor.num_nodes * args.actor.num_gpus_per_node
            == args.vllm.num_engines * args.vllm.tensor_parallel_size
        )
    if "large_model" in script.name or "70b" in script.name:
        # every Megatron-style axis OpenRLHF has: AutoTP (with ZeRO-2, the stage AutoTP ran at on CPU here),
        # ring attention (sequence parallel), vLLM tensor parallel, the optimizer in CPU memory
        assert args.ds.tensor_parallel_size > 1 and args.ds.zero_stage == 2 and args.ds.adam_offload
        assert args.vllm.tensor_parallel_size > 1 and args.ds.ring_attn_size > 1 and args.ds.packing_samples
        assert "--ds.tensor_parallel_size" in out.stdout


def test_loss_agg_mode_can_be_switched_back():
    script = next(p for p in SCRIPTS if p.name == "train_lens_qwen2.5_3b.sh")
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    default = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode seq-mean-token-mean" in default
    env["LOSS_AGG_MODE"] = "token-mean"
    switched = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode token-mean" in switched and "seq-mean-token-mean" not in switched


def test_common_sh_states_every_registry_option_without_listing_estimators(tmp_path):
    """common.sh asks the registry for the estimator's options (a new estimator needs no edit there): every
    registry estimator's command states each of its options at the registry default, OpenRLHF's none."""
    common = SCRIPTS[0].parent / "common.sh"
    text = common.read_text()
    assert not re.search(r"lens_negative_only|--algo\.lens\.alpha", text)  # no estimator list of its own
    for name in list(ADV_ESTIMATORS) + ["group_norm"]:
        driver = (
            f"set -euo pipefail; ESTIMATOR={name} LR=1e-6 FORMAT=qwen-base RUN_NAME=t; "
            f'source "{common}"; echo "${{PAPER_RECIPE[@]}}"'
        )
        out = subprocess.run(
            ["bash", "-c", driver], env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        spec = ADV_ESTIMATORS.get(name)
        for opt in spec.options.values() if spec else ():
            assert f"--algo.lens.{opt.name} {opt.default:g}" in out.stdout, (name, opt.name)
        if spec is None:
            assert "--algo.lens." not in out.stdout
