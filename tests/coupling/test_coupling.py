"""The OpenRLHF adapter: CLI on OpenRLHF's own parser, validation, and LENS inside the REAL experience maker.

Everything here runs the pinned OpenRLHF's own code: its parser (built by its own __main__ block), its
`RemoteExperienceMaker.compute_advantages_and_returns`, `Experience`, `compute_reward`, and a real Ray
actor hosting the real `RemoteExperienceMaker` class (as PPOTrainer's actor process hosts it).
"""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lens_openrlhf.dotted import flatten
from lens_openrlhf import coupling as A
from lens_openrlhf.estimators import group_advantages, masked_mean_log_probs
from cpu_jobs import job_argv

BASE = job_argv(estimator=None, reward="/tmp/reward.py")


@pytest.fixture(scope="module")
def parser():
    return A.build_parser()


def parse(parser, argv):
    return A.parse_args(list(argv), parser=parser)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def test_help_lists_lens_options():
    out = subprocess.run(
        [sys.executable, "-m", "lens_openrlhf.train_ppo_ray", "--help"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for flag in (
        "--algo.lens.alpha",
        "--algo.lens.logprob_source",
        "--algo.lens.gamma",
        "--algo.lens.d_imp",
        "--algo.lens.allow_truncated_logprobs",
        "--lens.rollout_seeds",
        "--algo.lens.lam",
        "--lens.cpu_mode",
    ):
        assert flag in out.stdout
    assert "arXiv 2510.08696" in out.stdout and "Paper: 0.25" in out.stdout
    for name in ("lens", "lens_mixed_only", "lens_negative_only", "grpo", "w_reinforce", "group_norm"):
        assert name in out.stdout


def test_estimator_help_states_each_batch_semantics(parser):
    from lens_openrlhf.estimators import ADV_ESTIMATORS

    action = next(a for a in parser._actions if a.dest == "algo.advantage.estimator")
    for spec in ADV_ESTIMATORS.values():  # read from the registry, not written twice
        assert f"{spec.name}: {spec.help.rstrip('.')} (trains on {spec.semantics})" in action.help


def test_parser_is_openrlhfs_own(parser):
    # a flag only OpenRLHF defines, with OpenRLHF's default, proves we extend its parser, not a copy
    args = parse(parser, BASE + ["--advantage_estimator", "lens"])
    assert args.actor.adam.lr == 1e-6 and args.rollout.batch_size == 1024 and args.ds.zero_stage == 2
    assert args.algo.advantage.estimator == "lens"
    assert args.algo.lens.alpha == 0.25  # not given: the registry default, resolved once in the driver


def _values_for(action):
    if action.nargs == 0:
        return []
    if action.choices:
        choices = [c for c in action.choices if c != action.default]
        return [str(choices[0])]
    n = action.nargs if isinstance(action.nargs, int) else 1
    if action.type is int:
        return ["3"] * n
    if action.type is float:
        return ["0.5"] * n
    return ["/tmp/x"] * n


def test_every_flat_flag_parses_to_its_dotted_name(parser):
    actions = {s: a for a in parser._actions for s in a.option_strings}
    for flat, target in A.FLAT_FLAGS.items():
        dotted = target if isinstance(target, str) else target[0]
        assert dotted in actions, f"{flat} -> {dotted}: not a flag of OpenRLHF {A.OPENRLHF_VERSION}"
        action = actions[dotted]
        values = [] if isinstance(target, tuple) else _values_for(action)
        ns_flat = parser.parse_args(A.translate_flat_flags([flat, *values]))
        ns_dotted = parser.parse_args([dotted, *(target[1:] if isinstance(target, tuple) else values)])
        assert vars(ns_flat) == vars(ns_dotted), flat
        if not (
            isinstance(target, tuple) and target[1] == action.default
        ):  # --bf16: bf16 is the pinned release's default
            assert getattr(ns_flat, action.dest) != action.default, f"{flat} did not change {action.dest}"
    # --flag=value form
    ns = parser.parse_args(A.translate_flat_flags(["--n_samples_per_prompt=16", "--advantage_estimator=lens"]))
    assert getattr(ns, "rollout.n_samples_per_prompt") == 16 and getattr(ns, "algo.advantage.estimator") == "lens"


def test_flat_flag_without_equivalent_says_what_to_use(capsys):
    with pytest.raises(SystemExit) as e:
        A.translate_flat_flags(["--prompt_max_len", "1024"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--prompt_max_len has no equivalent" in err and "--data.max_len" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--advantage_estimator", "lens", "--n_samples_per_prompt", "1"], "--rollout.n_samples_per_prompt >= 2"),
        (["--advantage_estimator", "grpo", "--n_samples_per_prompt", "1"], "--rollout.n_samples_per_prompt >= 2"),
        (["--advantage_estimator", "lens", "--algo.dynamic_filtering_enable"], "--algo.dynamic_filtering_range"),
        (["--advantage_estimator", "group_norm", "--algo.lens.alpha", "0.5"], "does not use them"),
        (["--advantage_estimator", "grpo", "--algo.lens.alpha", "0.5"], "not used by --algo.advantage.estimator grpo"),
        (["--advantage_estimator", "lens", "--algo.lens.lam", "0.5"], "--algo.lens.lam not used"),
        (["--advantage_estimator", "lens", "--algo.lens.alpha", "-1"], "alpha"),
        (["--advantage_estimator", "lens", "--vllm.num_engines", "0"], "--algo.lens.logprob_source actor"),
        (["--advantage_estimator", "lens", "--reward.overlong_buffer_len", "64"], "--reward.overlong_buffer_len"),
        (
            ["--advantage_estimator", "lens", "--top_p", "0.9"],
            "Use --rollout.top_p 1.0 (the paper's setting), or --algo.lens.logprob_source actor",
        ),
        (
            ["--advantage_estimator", "lens_negative_only", "--rollout.top_p", "0.95"],
            "--algo.lens.allow_truncated_logprobs",
        ),
        (
            ["--advantage_estimator", "lens_length_pref", "--algo.lens.gamma", "0"],
            "gamma' of estimator 'lens_length_pref': must be > 0",
        ),
        (["--advantage_estimator", "lens", "--algo.lens.d_imp", "raw"], "invalid choice: 'raw'"),
        (
            ["--advantage_estimator", "grpo", "--algo.lens.allow_truncated_logprobs"],
            "--algo.lens.allow_truncated_logprobs not used",
        ),
        (["--advantage_estimator", "lens", "--algo.advantage.gamma", "0.99"], "Remove --algo.advantage.gamma"),
        (["--advantage_estimator", "nsr", "--train.dynamic_batch_enable"], "Remove --train.dynamic_batch_enable"),
        (["--advantage_estimator", "psr", "--train.enable_ema"], "trains on the correct samples only"),
        (
            ["--advantage_estimator", "lens", "--ds.tensor_parallel_size", "3"],
            "not a multiple of --ds.tensor_parallel_size x --ds.ring_attn_size",
        ),
        (
            [
                "--advantage_estimator",
                "lens",
                "--ds.tensor_parallel_size",
                "2",
                "--train.batch_size",
                "6",
                "--train.micro_batch_size",
                "1",
            ],
            "data-parallel size = 1 x 4",
        ),
        (
            ["--advantage_estimator", "lens", "--ds.tensor_parallel_size", "2", "--ds.param_dtype", "fp16"],
            "needs --ds.param_dtype bf16",
        ),
    ],
)
def test_bad_combinations_exit_with_a_message(parser, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        parse(parser, BASE + argv)
    assert e.value.code != 0
    assert message in capsys.readouterr().err


def test_the_driver_keeps_one_copy_of_the_args_and_openrlhf_reads_it_back(parser):
    """``parse_args`` returns the hierarchized args only; ``dotted.flatten`` is the exact inverse of OpenRLHF's
    ``hierarchize`` on the whole parser (every flag, every default), so what the driver sets there (CPU mode, the
    paths made absolute) is what OpenRLHF's ``__main__`` reads."""
    from openrlhf.utils.config import hierarchize

    raw = parser.parse_args(A.translate_flat_flags(BASE + ["--advantage_estimator", "lens"]))
    assert len(vars(raw)) > 100 and vars(flatten(hierarchize(raw))) == vars(raw)
    args = parse(parser, BASE + ["--advantage_estimator", "lens"])
    args.ds.zero_stage, args.algo.lens.alpha = 3, 0.5
    again = hierarchize(flatten(args))
    assert again.ds.zero_stage == 3 and again.algo.lens.alpha == 0.5 and vars(flatten(again)) == vars(flatten(args))


@pytest.mark.parametrize(
    "estimator, given, resolved",
    [
        ("lens", [], {"alpha": 0.25, "d_imp": "pbar", "logprob_source": "vllm", "allow_truncated_logprobs": False}),
        ("lens", ["--algo.lens.alpha", "0.5"], {"alpha": 0.5, "gamma": None, "lam": None}),
        ("lens_length_pref", [], {"alpha": 0.25, "gamma": 1.05, "d_imp": None}),
        ("w_reinforce", [], {"lam": 0.1, "alpha": None, "logprob_source": None}),
        ("group_norm", [], {"alpha": None, "logprob_source": None}),
    ],
)
def test_lens_options_are_resolved_once_in_the_driver(parser, estimator, given, resolved):
    """The registry's defaults are applied when the driver parses, into the driver's one copy of the args, and reach
    the flat namespace OpenRLHF's ``__main__`` re-reads: the args OpenRLHF saves and prints, and those the actor
    receives, say what the run uses (``alpha 0.25``, not ``None``); options the estimator does not take stay None."""
    args = parse(parser, BASE + ["--advantage_estimator", estimator] + given)
    for name, value in resolved.items():
        assert getattr(args.algo.lens, name) == value, name
        assert getattr(flatten(args), f"algo.lens.{name}") == value, name


def test_good_combinations_validate(parser):
    for argv in (
        ["--advantage_estimator", "lens", "--algo.lens.alpha", "0.5"],
        [
            "--advantage_estimator",
            "lens",
            "--algo.dynamic_filtering_enable",
            "--algo.dynamic_filtering_range",
            "-0.01",
            "0.99",
        ],
        ["--advantage_estimator", "lens", "--vllm.num_engines", "0", "--algo.lens.logprob_source", "actor"],
        ["--advantage_estimator", "w_reinforce", "--algo.lens.lam", "0.2"],
        ["--advantage_estimator", "group_norm"],
        ["--advantage_estimator", "lens", "--top_p", "0.9", "--algo.lens.logprob_source", "actor"],
        ["--advantage_estimator", "lens", "--top_p", "0.9", "--algo.lens.allow_truncated_logprobs"],
        ["--advantage_estimator", "group_norm", "--top_p", "0.9"],
        ["--advantage_estimator", "lens_length_pref", "--algo.lens.gamma", "1.2"],
        ["--advantage_estimator", "lens_length_pref", "--algo.lens.gamma", "0.9"],  # above every pbar is enough
        ["--advantage_estimator", "lens", "--algo.lens.d_imp", "sequence"],
        [
            "--advantage_estimator",
            "lens",
            "--ds.tensor_parallel_size",
            "2",
            "--ds.ring_attn_size",
            "2",
            "--ds.zero_stage",
            "2",
        ],
        [
            "--advantage_estimator",
            "lens",
            "--ds.tensor_parallel_size",
            "2",
            "--ds.zero_stage",
            "3",
        ],  # DeepSpeed 0.19.6 runs it
    ):
        parse(parser, BASE + argv)


@pytest.mark.heavy
def test_truncated_pbar_is_refused_before_ray():
    # the command of the issue, as a user types it: exits 2 with the message, before Ray (or vLLM) starts
    cmd = [
        sys.executable,
        "-m",
        "lens_openrlhf.train_ppo_ray",
        "--advantage_estimator",
        "lens",
        "--top_p",
        "0.9",
    ] + BASE
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "--rollout.top_p 0.9 with --algo.lens.logprob_source vllm" in out.stderr
    assert "--algo.lens.logprob_source actor" in out.stderr and "--rollout.top_p 1.0" in out.stderr
    assert "Ray" not in out.stdout + out.stderr  # nothing was started
    # the message and a pointer to --help, not OpenRLHF's 15 KB usage text before it
    assert (
        "usage:" not in out.stderr
        and len(out.stderr) < 1500
        and "see python -m lens_openrlhf.train_ppo_ray --help" in out.stderr
    )


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("job")
    model = build_tiny_model(tmp / "model", seed=0)
    data = tmp / "train.jsonl"
    data.write_text('{"prompt": "What is 1 + 1?", "label": "2"}\n')
    no_func = tmp / "no_func.py"
    no_func.write_text("def reward(queries, prompts, labels):\n    return None\n")
    return SimpleNamespace(model=str(model), data=str(data), no_func=str(no_func), tmp=tmp)


def _main_exits(argv, capsys):
    import ray

    with pytest.raises(SystemExit) as e:
        A.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and not ray.is_initialized()  # refused before Ray was started
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lens_openrlhf.train_ppo_ray: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_model", "--actor.model_name_or_path (--pretrain) is required"),
        ("missing_model_dir", "/nonexistent/model: no such model folder"),
        (
            "hub_id_offline",
            "Qwen/Qwen2.5-3B: not a local folder, not in the local hub cache, and HF_HUB_OFFLINE is set",
        ),
        ("bad_hub_id", "neither a local folder nor a hub id"),
        ("missing_prompt_data", "/data/nope.jsonl: no such file"),  # made absolute against the working directory
        ("missing_reward_file", "--reward.remote_url /nonexistent/reward.py: no such file"),
        ("reward_without_func", "defines no reward_func(queries, prompts, labels)"),
    ],
)
def test_bad_files_are_one_line_before_ray(job_files, capsys, monkeypatch, case, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    flags = {
        "--pretrain": job_files.model,
        "--prompt_data": job_files.data,
        "--remote_rm_url": str(Path(A.__file__).parent.parent / "rewards" / "math_reward.py"),
    }
    if case == "no_model":
        del flags["--pretrain"]
    elif case == "missing_model_dir":
        flags["--pretrain"] = "/nonexistent/model"
    elif case == "hub_id_offline":
        flags["--pretrain"] = "Qwen/Qwen2.5-3B"
    elif case == "bad_hub_id":
        flags["--pretrain"] = "not a//hub id"
    elif case == "missing_prompt_data":
        flags["--prompt_data"] = "data/nope.jsonl"
    elif case == "missing_reward_file":
        flags["--remote_rm_url"] = "/nonexistent/reward.py"
    elif case == "reward_without_func":
        flags["--remote_rm_url"] = job_files.no_func
    argv = ["--advantage_estimator", "lens", "--vllm_num_engines", "1", "--n_samples_per_prompt", "4"]
    argv += ["--input_key", "prompt", "--label_key", "label"]
    for k, v in flags.items():
        argv += [k, v]
    assert message in _main_exits(argv, capsys)


def test_good_files_pass_the_checks(job_files, parser):
    args = parse(
        parser,
        [
            "--pretrain",
            job_files.model,
            "--prompt_data",
            job_files.data,
            "--input_key",
            "prompt",
            "--label_key",
            "label",
            "--remote_rm_url",
            str(Path(A.__file__).parent.parent / "rewards" / "math_reward.py"),
            "--vllm_num_engines",
            "1",
        ],
    )
    assert A.check_inputs(args) == []


def test_gpu_requirement_is_a_clear_message(parser, capsys):
    with_kl = parse(parser, BASE + ["--advantage_estimator", "lens", "--actor.num_gpus_per_node", "2"])
    assert A.gpus_needed(with_kl) == {"actor": 2, "reference": 8, "vllm": 1}  # OpenRLHF's default KL needs a ref
    args = parse(
        parser, BASE + ["--advantage_estimator", "lens", "--actor.num_gpus_per_node", "2", "--init_kl_coef", "0"]
    )
    assert A.gpus_needed(args) == {"actor": 2, "vllm": 1}
    with pytest.raises(SystemExit) as e:
        A.require_gpus(args, 0)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "needs 3 GPUs" in err and "--lens.cpu_mode" in err
    A.require_gpus(args, 3)  # enough: no exit


# ------------------------------------------------------------------------------------------------
# LENS in OpenRLHF's real compute_advantages_and_returns
# ------------------------------------------------------------------------------------------------
def expected_mean_lp(exps, G, attr):
    B = sum(len(e.index) for e in exps)
    out = torch.empty(B)
    for e in exps:
        out[torch.tensor(e.index)] = masked_mean_log_probs(getattr(e, attr), e.action_mask)
    return out.view(-1, G)


def real_maker(args):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    return RemoteExperienceMaker(None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None)


def batch_rewards(G=4, n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    r = (torch.rand(n, G, generator=g) < 0.35).float()
    r[0], r[1], r[2] = 0.0, 1.0, torch.tensor([1.0] + [0.0] * (G - 1))
    return r


def test_the_estimator_is_looked_up_once_per_run(parser, make_experiences, monkeypatch):
    """A1 consults the registry on its first batch only: the spec and the resolved options stay on the experience
    maker (one per PPOTrainer actor) for every later batch; a maker whose args name another estimator looks again."""
    from lens_openrlhf.coupling import run_plan as plans

    A.install_patches(rollout_logprobs=False)
    calls = []
    lookup = plans.get_adv_estimator
    monkeypatch.setattr(plans, "get_adv_estimator", lambda name: calls.append(name) or lookup(name))
    args = parse(parser, BASE + ["--advantage_estimator", "lens", "--algo.lens.alpha", "0.5"])
    maker, rewards = real_maker(args), batch_rewards(4)
    for _ in range(3):
        maker.compute_advantages_and_returns(make_experiences(rewards))
    assert calls == ["lens"] and maker._lens_run_plan.options["alpha"] == 0.5
    args.algo.advantage.estimator = "grpo"
    maker.compute_advantages_and_returns(make_experiences(rewards))
    assert calls == ["lens", "grpo"]


@pytest.mark.parametrize("source, attr", [("vllm", "rollout_log_probs"), ("actor", "action_log_probs")])
def test_lens_through_real_experience_maker(parser, source, attr, make_experiences):
    A.install_patches(rollout_logprobs=False)
    G = 4
    args = parse(
        parser,
        BASE + ["--advantage_estimator", "lens", "--algo.lens.logprob_source", source, "--algo.lens.alpha", "0.5"],
    )
    rewards = batch_rewards(G)
    exps = make_experiences(rewards)
    mean_lp = expected_mean_lp(exps, G, attr)
    out = real_maker(args).compute_advantages_and_returns(exps)
    want = group_advantages("lens", rewards, mean_lp, alpha=0.5).flatten()
    other = group_advantages(
        "lens",
        rewards,
        expected_mean_lp(exps, G, "action_log_probs" if source == "vllm" else "rollout_log_probs"),
        alpha=0.5,
    ).flatten()
    assert not torch.allclose(want, other)  # the two sources really give different numbers here
    negative_nonzero = False
    for e in out:
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            torch.testing.assert_close(e.advantages[row][m], want[i].expand(int(m.sum())), rtol=1e-6, atol=1e-7)
            assert torch.all(e.advantages[row][~m] == 0)
            negative_nonzero |= i < G and bool(e.advantages[row][m].abs().max() > 0)
        for key in (
            "lens/negative_group_ratio",
            "lens/mixed_group_ratio",
            "lens/all_correct_group_ratio",
            "lens/mean_D",
            "lens/mean_pbar_incorrect",
            "lens/mean_calibrated_reward_incorrect",
            "lens/nonzero_adv_frac",
        ):
            assert e.info[key].shape == (len(e.index),)
        assert e.kl is None and e.returns is not None
    assert negative_nonzero  # group 0 is all-incorrect and still carries gradient
    info = out[0].info
    assert info["lens/negative_group_ratio"][0].item() == pytest.approx(float((rewards.sum(-1) == 0).float().mean()))
    assert info["lens/all_correct_group_ratio"][0].item() == pytest.approx(
        float((rewards.mean(-1) == 1).float().mean())
    )


def test_openrlhf_estimators_still_run_openrlhfs_code(parser, make_experiences):
    """group_norm goes to OpenRLHF's own branch (float32), and our grpo (float64, rounded once) equals it for
    every binary group up to G = 64 within the error bound of the float32 computation.

    The bound, first order in u = 2^-24: with k ones out of G, OpenRLHF's mean k/G is rounded (<= u), and
    |x - mean| >= 1/G, so x - mean carries a relative error <= (G - 1) u; it enters the numerator and, through
    the squares, the std: <= 2 (G - 1) u; the remaining operations (division, squares, sums, sqrt, + 1e-9,
    division, our final rounding) add <= 10 u. The worst group measured: 23 u at G = 59 (one 0, 58 ones).
    """
    A.install_patches(rollout_logprobs=False)
    G = 4
    args = parse(parser, BASE + ["--advantage_estimator", "group_norm"])
    rewards = batch_rewards(G)
    out = real_maker(args).compute_advantages_and_returns(make_experiences(rewards))
    want = group_advantages("grpo", rewards).flatten()
    for e in out:
        assert not any(k.startswith("lens/") for k in e.info)  # OpenRLHF's path, not ours
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            torch.testing.assert_close(
                e.advantages[row][m], want[i].expand(int(m.sum())), rtol=(2 * (G - 1) + 10) * 2.0**-24, atol=0
            )
    worst = 0.0
    for G in range(2, 65):
        args = parse(parser, BASE + ["--advantage_estimator", "group_norm", "--n_samples_per_prompt", str(G)])
        rewards = (torch.arange(G).expand(G + 1, G) < torch.arange(G + 1).unsqueeze(1)).float()  # k = 0..G ones
        exps = make_experiences(rewards, micro=4 * G, T=1)
        theirs = torch.empty(G + 1, G)
        for e in real_maker(args).compute_advantages_and_returns(exps):
            theirs.view(-1)[torch.tensor(e.index)] = e.advantages[:, 0] * e.action_mask[:, 0]
        ours = group_advantages("grpo", rewards)
        assert torch.equal(ours[[0, G]], theirs[[0, G]]) and not ours[[0, G]].any()  # uniform groups: exactly 0
        rel = ((ours - theirs).abs() / ours.abs().clamp(min=1e-30))[1:G].max().item() / 2.0**-24
        assert rel <= 2 * (G - 1) + 10, (G, rel)
        worst = max(worst, rel)
    print(f"grpo vs OpenRLHF's float32 group_norm, binary groups G <= 64: worst relative difference {worst:.1f} u")
    assert worst > 0  # the two really are computed differently


def test_missing_vllm_log_probs_is_a_clear_error(parser, make_experiences):
    A.install_patches(rollout_logprobs=False)
    args = parse(parser, BASE + ["--advantage_estimator", "lens"])
    exps = make_experiences(batch_rewards(4))
    for e in exps:
        e.rollout_log_probs = None
    with pytest.raises(RuntimeError, match="no vLLM log-probs"):
        real_maker(args).compute_advantages_and_returns(exps)


@pytest.mark.heavy
def test_rollout_logprob_patches(parser):
    A.install_patches(rollout_logprobs=True)
    assert A.patches_installed() == {
        **{pid: True for pid in ("A1", "B1", "E1", "R1", "R2", "T1", "T2", "V2")},
        **{pid: True for pid in ("S1", "S2", "S3")},  # in every process; the args say whether to seed
        "V3": False,  # only with --lens.vllm_dtype
    }
    # the engines are created in processed mode: the log-probs of the sampling distribution
    seen = {}
    saved = A.COUPLING._originals["V2"]
    A.COUPLING._originals["V2"] = lambda *a, **k: seen.update(args=a, kwargs=k)
    try:
        import openrlhf.trainer.ray as ray_pkg

        ray_pkg.create_vllm_engines(1, 1, "m", 0, False, False, True, 64, None, 0.5, False, None)
        assert seen["args"][11] == "processed_logprobs"
    finally:
        A.COUPLING._originals["V2"] = saved


# ------------------------------------------------------------------------------------------------
# The patch where it runs: a real Ray actor hosting the real RemoteExperienceMaker
# ------------------------------------------------------------------------------------------------
class TrainerLikeActor:
    """Hosts the real RemoteExperienceMaker the way PPOTrainer does: it builds it in its own process from
    the class imported there (PPOTrainer is `@ray.remote` and its module imports RemoteExperienceMaker).
    Note: `ray.remote(RemoteExperienceMaker)` would NOT do: Ray pickles the class dict by value, which
    would carry a driver-side patch along and prove nothing."""

    def __init__(self, args):
        from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

        self.maker = RemoteExperienceMaker(
            None, None, None, None, SimpleNamespace(value=0.0), SimpleNamespace(args=args), None
        )

    def run(self, exps):
        return self.maker.compute_advantages_and_returns(exps), os.getpid()


def _run_in_ray_actor(runtime_env, args, exps):
    import ray
    from ray import cloudpickle

    # this test module is not importable in a worker (pytest importlib mode): ship the class by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=0)(TrainerLikeActor).remote(args)
        try:
            return ray.get(actor.run.remote(exps))
        except Exception as e:  # noqa: BLE001
            return e, None
    finally:
        ray.shutdown()


@pytest.mark.heavy
def test_patch_takes_effect_inside_a_ray_actor(parser, make_experiences):
    import ray

    assert not ray.is_initialized()
    G = 4
    args = parse(parser, BASE + ["--advantage_estimator", "lens", "--algo.lens.logprob_source", "actor"])
    rewards = batch_rewards(G)
    exps = make_experiences(rewards)
    want = group_advantages("lens", rewards, expected_mean_lp(exps, G, "action_log_probs")).flatten()

    A.install_patches(rollout_logprobs=False)  # patched here, in the driver: that must not be what counts
    shim = "lens_openrlhf.cpu_shims.ensure_flash_attn_importable"  # flash-attn cannot exist on CPU
    # without our worker hook, OpenRLHF's own method runs in the actor and rejects 'lens'
    without, _ = _run_in_ray_actor({"worker_process_setup_hook": shim}, args, exps)
    assert isinstance(without, Exception) and "Unkown advantage_estimator lens" in str(without)

    # with the runtime_env the adapter builds, the actor process runs LENS
    env = A.runtime_env(args, extra_hooks=[shim])
    assert env["worker_process_setup_hook"] == "lens_openrlhf.coupling.launch.ray_worker_setup"
    out, pid = _run_in_ray_actor(env, args, exps)
    assert not isinstance(out, Exception), out
    assert pid != os.getpid()
    for e in out:
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            torch.testing.assert_close(e.advantages[row][m], want[i].expand(int(m.sum())), rtol=1e-6, atol=1e-7)
        assert "lens/negative_group_ratio" in e.info


# ------------------------------------------------------------------------------------------------
# Training-time evaluation: unbiased pass@k and Levels 4-5 next to OpenRLHF's own eval metrics
# ------------------------------------------------------------------------------------------------
def test_training_eval_logs_unbiased_pass_at_k_per_level():
    from math import comb

    from openrlhf.trainer import ppo_trainer
    from openrlhf.trainer.ppo_utils.experience import Experience

    A.install_patches(rollout_logprobs=False)
    n = 4
    # prompt -> (datasource written by lens_openrlhf.data, number correct out of n)
    table = {
        "p1": ("math_level1", 4),
        "p2": ("math_level4", 1),
        "p3": ("math_level5", 0),
        "p4": ("math_level5", 2),
        "p5": ("default", 3),
    }
    loader = [
        (["math_level1", "math_level4"], ["p1", "p2"], ["a", "b"], [None, None]),
        (["math_level5", "math_level5", "default"], ["p3", "p4", "p5"], ["c", "d", "e"], [None] * 3),
    ]
    samples = []
    for prompt, (_, c) in table.items():
        for j in range(n):
            samples.append(
                Experience(
                    prompts=[prompt],
                    rewards=torch.tensor([1.0 if j < c else 0.0]),
                    response_length=torch.tensor([5]),
                    truncated=torch.tensor([False]),
                )
            )
    logs = ppo_trainer.compute_eval_metrics(loader, samples, n)  # the patched module-level function
    assert "eval_math_level5_pass4" in logs  # OpenRLHF's own metrics are still there

    def pk(c, k):  # 1 - C(n-c, k)/C(n, k), written out
        return 1 - comb(n - c, k) / comb(n, k)

    cs = [c for _, c in table.values()]
    for k in (1, 2, 4):
        assert logs[f"unbiased_pass@{k}"] == pytest.approx(sum(pk(c, k) for c in cs) / 5)
        assert logs[f"unbiased_levels_4_5_pass@{k}"] == pytest.approx((pk(1, k) + pk(0, k) + pk(2, k)) / 3)
        assert logs[f"unbiased_level_5_pass@{k}"] == pytest.approx((pk(0, k) + pk(2, k)) / 2)
    assert "unbiased_pass@8" not in logs  # k <= n only
    assert logs["unbiased_pass@2"] == pytest.approx((1 + 0.5 + 0 + 5 / 6 + 1) / 5)  # by hand


def test_non_group_estimator_with_one_sample_per_prompt(parser, make_experiences):
    """w_reinforce needs no group: G = 1 runs, and no NaN reaches the logs (std of one sample)."""
    A.install_patches(rollout_logprobs=False)
    args = parse(parser, BASE + ["--advantage_estimator", "w_reinforce", "--n_samples_per_prompt", "1"])
    rewards = torch.tensor([[1.0], [0.0], [0.0], [1.0], [0.0]])
    out = real_maker(args).compute_advantages_and_returns(make_experiences(rewards))
    want = group_advantages("w_reinforce", rewards).flatten()  # 0.1 on correct, -1 on incorrect
    for e in out:
        for row, i in enumerate(e.index):
            m = e.action_mask[row]
            assert torch.all(e.advantages[row][m] == want[i])
        assert all(torch.isfinite(v).all() for v in e.info.values())
        assert "group_reward_std" not in e.info


# ------------------------------------------------------------------------------------------------
# A reward function that raises stops the run with its own error, where OpenRLHF calls it
# ------------------------------------------------------------------------------------------------
GOOD_REWARD = """
import torch
def reward_func(queries, prompts, labels):
    r = torch.tensor([1.0 if "\\\\boxed{" + l + "}" in q else 0.0 for q, l in zip(queries, labels)])
    return {"rewards": r, "scores": r, "extra_logs": {}}
"""


class ExecutorHost:
    """Builds OpenRLHF's SingleTurnAgentExecutor in its own Ray actor process, as RolloutRayActor does, and
    runs its real ``execute`` (reward via ``asyncio.to_thread``). Only the generation is replayed: the
    engine returns a fixed completion, since the reward path is what is under test."""

    def __init__(self, reward_files, model_dir):
        from openrlhf.utils.agent import SingleTurnAgentExecutor
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.executors = {k: SingleTurnAgentExecutor(remote_rm_url=v) for k, v in reward_files.items()}

    async def run(self, key, completion):
        ids = self.tok(text=completion, add_special_tokens=False)["input_ids"]

        class ReplayEngine:
            async def generate(self, prompt_token_ids, params, multi_modal_data=None):
                out = SimpleNamespace(token_ids=ids, finish_reason="stop", logprobs=None)
                return SimpleNamespace(outputs=[out])

        params = SimpleNamespace(max_tokens=16, logprobs=None)
        try:
            out = await self.executors[key].execute("Q:", "2", params, 64, self.tok, ReplayEngine())
        except Exception as e:  # noqa: BLE001
            return "raised", f"{type(e).__name__}: {e}"
        r = out["reward"]
        return "ok", None if r is None else float(torch.as_tensor(r).reshape(-1)[0])


@pytest.mark.heavy
def test_reward_error_stops_the_run_inside_a_ray_actor(tmp_path, parser):
    import ray
    from ray import cloudpickle

    from lens_openrlhf.localrun.tiny import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "model", seed=0)
    good = tmp_path / "good_reward.py"
    good.write_text(GOOD_REWARD)
    math_py = str(Path(A.__file__).parent.parent / "rewards" / "math_reward.py")
    files = {"math": math_py, "good": str(good)}
    broken = {"LENS_MATH_WORKERS": "0"}  # the verifier pool cannot start: the case that used to score every answer 0
    shim = "lens_openrlhf.cpu_shims.ensure_flash_attn_importable"
    args = parse(parser, BASE + ["--advantage_estimator", "lens"])
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def run(runtime_env):
        ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
        try:
            host = ray.remote(num_cpus=0)(ExecutorHost).remote(files, str(model_dir))
            return ray.get(
                [host.run.remote("math", " \\boxed{2}"), host.run.remote("good", " \\boxed{2}")], timeout=300
            )
        finally:
            ray.shutdown()

    # OpenRLHF alone: the exception is logged at INFO and the reward silently stays None
    plain = run({"worker_process_setup_hook": shim, "env_vars": dict(broken)})  # (Ray adds its hook variable to it)
    assert plain == [("ok", None), ("ok", 1.0)]
    # with the adapter's worker hook: the run stops with the reward's own error; a healthy reward is untouched
    hooked = run(A.runtime_env(args, extra_env=dict(broken), extra_hooks=[shim]))
    status, message = hooked[0]
    assert status == "raised" and message.startswith("RewardFunctionError: the reward function in ")
    assert "VerifierUnavailable" in message and "LENS_MATH_WORKERS" in message and "cannot run" in message
    assert hooked[1] == ("ok", 1.0)


def test_adding_an_estimator_is_one_decorated_function(capsys):
    """A new estimator registered with @register_adv_est appears in the CLI (OpenRLHF's parser, extended) and
    is validated from its spec (G, dynamic filtering), with no other file touched."""
    from lens_openrlhf import estimators as E

    @E.register_adv_est(
        "test_sign_only",
        help="Test estimator: +1 correct, -1 incorrect.",
        group_based=False,
        negative_groups_learn=True,
        semantics="every sample; weight +1 on correct, -1 on incorrect",
    )
    def test_sign_only(rewards, ctx):
        return rewards.float() * 2 - 1

    try:
        parser = A.build_parser()
        args = parse(parser, BASE + ["--advantage_estimator", "test_sign_only", "--n_samples_per_prompt", "1"])
        assert args.algo.advantage.estimator == "test_sign_only"  # G = 1 accepted: group_based=False
        with pytest.raises(SystemExit):  # dynamic filtering would drop what it learns from: its spec says so
            parse(parser, BASE + ["--advantage_estimator", "test_sign_only", "--algo.dynamic_filtering_enable"])
        assert "--algo.dynamic_filtering_range" in capsys.readouterr().err
        assert group_advantages("test_sign_only", torch.tensor([[1.0, 0.0]])).tolist() == [[1.0, -1.0]]
    finally:
        del E.ADV_ESTIMATORS["test_sign_only"]
