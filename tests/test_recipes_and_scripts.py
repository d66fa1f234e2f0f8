"""Every example script's training command parses with the real parser (the pinned OpenRLHF's own, extended)
and passes our validation, and its recipe matches the paper's table (../shared/LENS.md, appendix D)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf.dotted import flatten
from lens_openrlhf import coupling as A
from lens_openrlhf.estimators import ADV_ESTIMATORS
from lens_openrlhf.localrun.rehearsal import split_submission

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
def test_script_flags_parse_and_match_the_paper(parser, script, script_submissions):
    line, _ = script_submissions[script.name]
    _, argv = split_submission(line)
    assert argv[:3] == ["python", "-m", "lens_openrlhf.train_ppo_ray"]
    args = A.parse_args(argv[3:], parser=parser)  # exits (fails the test) on a stale or bad flag
    flat = vars(flatten(args))
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
    assert args.reward.remote_url == "lens_openrlhf/rewards/math_reward.py"  # inside the uploaded working dir
    assert args.ckpt.load_enable  # a resubmitted job resumes
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
        assert "--ds.tensor_parallel_size" in line


def test_loss_agg_mode_can_be_switched_back():
    script = next(p for p in SCRIPTS if p.name == "train_lens_qwen2.5_3b.sh")
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    default = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode seq-mean-token-mean" in default
    env["LOSS_AGG_MODE"] = "token-mean"
    switched = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert "--actor.loss_agg_mode token-mean" in switched and "seq-mean-token-mean" not in switched


@pytest.mark.heavy
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
            default = f"{opt.default:g}" if isinstance(opt.default, (int, float)) else str(opt.default)
            assert f"--algo.lens.{opt.name} {default}" in out.stdout, (name, opt.name)
        if spec is None:
            assert "--algo.lens." not in out.stdout


# ------------------------------------------------------------------------------------------------ recipes.py
def _parsed(flags, parser):
    args = A.parse_args(list(flags), parser=parser)
    return vars(flatten(args)), args


def test_paper_and_cpu_recipes_share_the_algorithm(parser, tmp_path):
    """One definition: every flag of recipes.ALGORITHM has the same value in the paper's recipe (what the GPU
    scripts run) and in the CPU recipe (what the demo runs), after the real parser."""
    from lens_openrlhf import recipes

    paper = recipes.paper("lens", 1e-6, "qwen-base")
    cpu = recipes.cpu(
        tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "r.py", tmp_path, steps=2, prompts=4, n_samples=4,
        max_new_tokens=8, lr=1e-5,
    )  # fmt: skip
    p = _parsed(["--actor.model_name_or_path", "x", "--vllm.num_engines", "1"] + paper, parser)[0]
    c = _parsed(cpu, parser)[0]
    for flag, _ in recipes.ALGORITHM:
        key = flag[2:]
        assert p[key] == c[key] == PAPER.get(key, p[key]), key
    assert c["algo.lens.alpha"] == p["algo.lens.alpha"] == 0.25  # the registry's option, stated by both


def test_cpu_recipe_is_valid_for_cpu_mode_and_dotted(parser, tmp_path):
    from lens_openrlhf import recipes
    from lens_openrlhf.cpu.profile import check_and_default_args

    flags = recipes.cpu(
        tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "r.py", tmp_path, steps=3, prompts=8, n_samples=4,
        updates_per_step=4, max_new_tokens=8, lr=1e-5, eval_file=tmp_path / "t.jsonl", eval_every=2, eval_n=4,
    )  # fmt: skip
    assert all("." in f for f in flags if f.startswith("--")), "flat flags in the CPU recipe"
    args = A.parse_args(flags, parser=parser)
    errors, _ = check_and_default_args(args)
    assert errors == []
    assert args.train.batch_size == 8 and args.rollout.batch_size == 8 and args.data.max_samples == 24
    assert args.eval.steps == 2 and args.eval.n_samples_per_prompt == 4 and args.lens.cpu_mode
    with pytest.raises(ValueError, match="updates per step 3 must divide the rollout's 8 x 4"):
        recipes.cpu(tmp_path, tmp_path, tmp_path, tmp_path, steps=1, prompts=8, n_samples=4, updates_per_step=3,
                    max_new_tokens=8, lr=1e-5)  # fmt: skip


def test_recipes_cli_prints_one_token_per_line_and_refuses_a_bad_format():
    ok = subprocess.run(
        [sys.executable, "-m", "lens_openrlhf.recipes", "paper", "--estimator", "grpo", "--lr", "1e-6", "--format",
         "llama-instruct"], capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[:2] == ["--algo.advantage.estimator", "grpo"] and "--data.apply_chat_template" in lines
    bad = subprocess.run(
        [sys.executable, "-m", "lens_openrlhf.recipes", "paper", "--estimator", "lens", "--lr", "1e-6", "--format",
         "qwen"], capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--format" in bad.stderr and "qwen-base" in bad.stderr


@pytest.mark.heavy
def test_no_command_of_ours_has_flat_flags():
    """Flat flags (OpenRLHF <= 0.10) are accepted on the command line (coupling/parser.py translates them) but no
    command we build has one: every example script's and every benchmark script's command is in dotted flags."""
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    repo = Path(__file__).resolve().parents[1]
    for script in SCRIPTS + [repo / "benchmarks" / "cluster" / "run.sh"]:
        out = subprocess.run(["bash", str(script), "/tmp/x"], env=env, capture_output=True, text=True)
        commands = [shlex.split(line.lstrip("+ ")) for line in out.stdout.splitlines() if "train_ppo_ray" in line]
        flags = [t for argv in commands for t in argv[argv.index("lens_openrlhf.train_ppo_ray") + 1 :]]
        flags = [t for t in flags if t.startswith("--")]
        assert flags, (script.name, out.stdout, out.stderr)
        assert all("." in t for t in flags), (script.name, [t for t in flags if "." not in t])


# ------------------------------------------------------------------------------------------------ the [gpu] extra
#: what a script flag makes OpenRLHF import beyond its own requirements: (package, when, OpenRLHF file, import text);
#: each import is checked in the installed OpenRLHF below, so a moved import shows here
OPTIONAL_PACKAGES = {
    "--vllm.num_engines": (
        "vllm", lambda a: (a.vllm.num_engines or 0) > 0, "trainer/ray/vllm_engine.py", "import vllm",
    ),
    "--ds.attn_implementation flash_attention_2": (
        "flash-attn", lambda a: a.ds.attn_implementation == "flash_attention_2", "models/ring_attn_utils.py",
        "from flash_attn",
    ),
    "--ds.packing_samples": (
        "flash-attn", lambda a: a.ds.packing_samples, "models/ring_attn_utils.py", "from flash_attn",
    ),
    "--ds.ring_attn_size": (
        "ring-flash-attn", lambda a: a.ds.ring_attn_size > 1, "models/ring_attn_utils.py", "from ring_flash_attn",
    ),
    "--ds.use_liger_kernel": (
        "liger-kernel", lambda a: a.ds.use_liger_kernel, "models/actor.py", "from liger_kernel",
    ),
}  # fmt: skip


def _requirements(section: str, key: str) -> set:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    return {re.split(r"[=<>\[ ]", line.strip())[0] for line in cfg[section][key].splitlines() if line.strip()}


def test_the_gpu_extra_installs_what_every_script_needs(parser, script_submissions):
    import openrlhf

    root = Path(openrlhf.__file__).parent
    for flag, (package, _, path, text) in OPTIONAL_PACKAGES.items():
        assert text in (root / path).read_text(), f"{flag}: OpenRLHF's {path} no longer has {text!r}"
    extra = _requirements("options.extras_require", "gpu")
    installed = extra | _requirements("options", "install_requires")
    needed = {}
    for script in SCRIPTS:
        args = A.parse_args(split_submission(script_submissions[script.name][0])[1][3:], parser=parser)
        for flag, (package, used, _, _) in OPTIONAL_PACKAGES.items():
            if used(args):
                needed.setdefault(package, set()).add(f"{script.name} ({flag})")
    assert {"vllm", "flash-attn", "ring-flash-attn"} <= set(needed)  # the scripts use all three
    missing = {p: sorted(by) for p, by in needed.items() if p not in installed}
    assert not missing, f"not in setup.cfg's [gpu] extra: {missing}"


def test_the_readme_cluster_quick_start_is_the_scripts_submission(tmp_path):
    """README's cluster block names scripts that exist, and every flag its DRY_RUN excerpt shows is in the real
    DRY_RUN output with the same value (the excerpt is the recipe, not a copy that can drift)."""
    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    section = readme[readme.index("## On a GPU cluster") : readme.index("## The estimators")]
    for script in re.findall(r"bash (examples/scripts/\S+\.sh)", section):
        assert (repo / script).is_file(), script
    block = section[section.index("$ DRY_RUN=1 bash examples/scripts/train_lens_qwen2.5_3b.sh") :].split("```")[0]
    text = re.sub(r"'[^']*'", "", " ".join(line.strip() for line in block.splitlines()[1:]))  # the runtime env
    tokens = [t for t in text.split() if t != "..."]
    shown = []
    for i, t in enumerate(tokens):
        if t.startswith("--") and len(t) > 2:
            flag, _, value = t.partition("=")
            nxt = tokens[i + 1] if i + 1 < len(tokens) else "--"
            shown.append((flag, value or (None if nxt.startswith("--") else nxt)))
    out = subprocess.run(
        ["bash", str(repo / "examples" / "scripts" / "train_lens_qwen2.5_3b.sh")], cwd=tmp_path, check=True,
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}, capture_output=True, text=True,
    ).stdout  # fmt: skip
    submit, cmd = split_submission(out.strip())
    words = submit + cmd
    assert len(shown) >= 12, shown
    for flag, value in shown:
        got = [w.split("=", 1)[1] for w in words if w.startswith(flag + "=")]
        got += [words[i + 1] for i, w in enumerate(words[:-1]) if w == flag]
        if value is None:
            assert flag in words, flag
        elif not value.endswith("..."):
            assert value in got, (flag, value, got)


def test_the_data_file_names_have_one_owner(tmp_path):
    """``recipes.train_file`` names the training set the data CLI writes and the recipes read (either spelling of the
    mix); ``python -m lens_openrlhf.data all`` writes exactly those names."""
    from lens_openrlhf import recipes
    from lens_openrlhf.data.cli import main as data_main

    assert recipes.train_file("d", "math_dapo", "qwen-base") == recipes.train_file("d", "math-dapo", "qwen-base")
    assert recipes.train_file("d", "math-numina", "llama-instruct") == "d/train_math_numina.llama.jsonl"
    with pytest.raises(ValueError, match="mix must be one of"):
        recipes.train_file("d", "math_gsm8k", "qwen-base")
    assert data_main(["all", "--out-dir", str(tmp_path), "--offline-sample", "8", "--workers", "1"]) == 0
    written = {p.name for p in tmp_path.glob("*.jsonl")}
    expected = {Path(recipes.train_file(tmp_path, m, f)).name for m in recipes.MIXES for f in recipes.FORMAT_TAGS}
    expected |= {Path(recipes.test_file(tmp_path, f)).name for f in recipes.FORMAT_TAGS}
    assert written == expected
