"""Every example script's training command parses with the real parser (OpenRLHF 0.11.2's own, extended)
and passes our validation, and its recipe matches the paper's table (../shared/LENS.md, appendix D)."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from lens_openrlhf import coupling as A

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
        "train_lens_qwen2.5_3b.sh", "train_grpo_qwen2.5_3b.sh", "train_lens_llama3.1_8b.sh", "train_grpo_llama3.1_8b.sh",
        "train_lens_mixed_only_llama3.1_8b.sh", "train_lens_negative_only_llama3.1_8b.sh",
        "train_lens_multinode.sh", "train_lens_large_model.sh", "train_lens_llama3.1_70b.sh",
    ):
        assert want in names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_flags_parse_and_match_the_paper(parser, script):
    out = subprocess.run(["bash", str(script)], env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True)
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
    if est in ("lens", "lens_negative_only"):
        assert args.algo.lens.alpha == 0.25
    for tag, lr in LR.items():
        if tag in script.name:
            assert args.actor.adam.lr == lr
    assert args.reward.remote_url.endswith("lens_openrlhf/rewards/math_reward.py")
    if "llama" in script.name:
        assert args.data.apply_chat_template and "math_test.llama" in args.eval.dataset
    if "qwen" in script.name:
        assert not args.data.apply_chat_template and "math_test.qwen" in args.eval.dataset
    if args.train.colocate_all:
        assert args.actor.num_nodes * args.actor.num_gpus_per_node == args.vllm.num_engines * args.vllm.tensor_parallel_size
    if "large_model" in script.name or "70b" in script.name:
        # every Megatron-style axis OpenRLHF has: AutoTP (with ZeRO-2, the stage AutoTP ran at on CPU here),
        # ring attention (sequence parallel), vLLM tensor parallel, the optimizer in CPU memory
        assert args.ds.tensor_parallel_size > 1 and args.ds.zero_stage == 2 and args.ds.adam_offload
        assert args.vllm.tensor_parallel_size > 1 and args.ds.ring_attn_size > 1 and args.ds.packing_samples
        assert "--ds.tensor_parallel_size" in out.stdout


def test_loss_agg_mode_can_be_switched_back():
    script = next(p for p in SCRIPTS if p.name == "train_lens_qwen2.5_3b.sh")
    env = {**os.environ, "DRY_RUN": "1"}
    default = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode seq-mean-token-mean" in default
    env["LOSS_AGG_MODE"] = "token-mean"
    switched = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode token-mean" in switched and "seq-mean-token-mean" not in switched


def test_common_sh_alpha_list_is_the_registrys():
    # common.sh writes --algo.lens.alpha for exactly the estimators whose registry spec takes alpha
    import re

    from lens_openrlhf.estimators import ADV_ESTIMATORS

    text = (SCRIPTS[0].parent / "common.sh").read_text()
    m = re.search(r'^  ([a-z_|]+)\) PAPER_RECIPE\+=\(--algo\.lens\.alpha', text, re.M)
    assert m, "common.sh has no alpha case"
    assert set(m.group(1).split("|")) == {n for n, s in ADV_ESTIMATORS.items() if "alpha" in s.options}
