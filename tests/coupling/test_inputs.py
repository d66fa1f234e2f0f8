"""The paths and files a job names, checked in the driver before Ray (lens_openrlhf.coupling.inputs): a dataset that
cannot train is refused in one line naming the file and the line; a path that would not be reachable where the job
runs is refused (inside `ray job submit`) or made absolute (outside it)."""

import json
import os
import subprocess
import sys
import time

import pytest

from lens_openrlhf import coupling as A
from lens_openrlhf.coupling import inputs
from lens_openrlhf.dotted import flatten, get_flag
from cpu_jobs import job_argv


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from lens_openrlhf.localrun.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def reward(tmp_path):
    path = tmp_path / "reward.py"
    path.write_text("def reward_func(queries, prompts, labels):\n    return {'rewards': [0.0] * len(queries)}\n")
    return path


def _args(model, data, reward, *extra):
    return A.parse_args(
        job_argv("--data.prompt_dataset", data, "--data.input_key", "prompt", "--data.label_key", "label", *extra,
                 model=model, reward=reward)
    )  # fmt: skip


def _jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD = json.dumps({"prompt": "What is 1 + 1?", "label": "2"})


@pytest.mark.parametrize(
    "lines, message",
    [
        (
            [json.dumps({"prompt": "What is 1 + 1?", "answer": "2"})],
            "line 1 has no key 'label' (--data.label_key label)",
        ),
        ([GOOD, '{"prompt": "broken'], "line 2 is not JSON"),
        ([], "the file holds no rows"),
        ([GOOD, json.dumps({"prompt": 3, "label": "3"})], "line 2 holds a int under 'prompt'"),
        (
            [json.dumps({"prompt": [{"role": "user", "content": "hi"}], "label": "1"})],
            "line 1 holds a chat message list under 'prompt', which needs --data.apply_chat_template",
        ),
    ],
)
def test_a_dataset_that_cannot_train_is_named_with_its_line(tmp_path, model, reward, lines, message):
    data = _jsonl(tmp_path / "train.jsonl", lines)
    args = _args(model, data, reward)
    errors = inputs.check_inputs(args)
    assert len(errors) == 1 and errors[0].startswith(f"--data.prompt_dataset {data}: {message}"), errors


def test_eval_dataset_and_parquet_columns_are_checked(tmp_path, model, reward):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = _jsonl(tmp_path / "train.jsonl", [GOOD])
    bad = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "x", "answer": "1"}]), bad)
    args = _args(model, good, reward, "--eval.dataset", str(bad))
    assert inputs.check_inputs(args) == [
        f"--eval.dataset {bad}: no column 'label' (--data.label_key label); its columns: 'prompt', 'answer'"
    ]
    args = _args(model, good, reward)
    assert inputs.check_inputs(args) == []


def test_chat_template_needs_a_tokenizer_that_has_one(tmp_path, model, reward):
    data = _jsonl(tmp_path / "train.jsonl", [GOOD])
    args = _args(model, data, reward, "--data.apply_chat_template")
    assert inputs.check_inputs(args) == []  # the tiny tokenizer has a ChatML template
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text("{}")
    (bare / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8}))
    args = _args(bare, data, reward, "--data.apply_chat_template")
    (err,) = inputs.check_inputs(args)
    assert err.startswith(f"--data.apply_chat_template: the tokenizer of --actor.model_name_or_path {bare} has no chat")


@pytest.mark.heavy
def test_refused_in_the_driver_before_ray(tmp_path, model, reward):
    """As a user runs it (CPU mode, RAY_ADDRESS pointing nowhere): a run that got past the checks would hang on the
    connection; each bad dataset ends at once with one line naming the file."""
    bad = _jsonl(tmp_path / "train.jsonl", [GOOD, "{not json"])
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "lens_openrlhf.train_ppo_ray", "--lens.cpu_mode", "--advantage_estimator", "lens",
         "--pretrain", str(model), "--prompt_data", str(bad), "--input_key", "prompt", "--label_key", "label",
         "--remote_rm_url", str(reward), "--n_samples_per_prompt", "4", "--vllm_num_engines", "1"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"error: --data.prompt_dataset {bad}: line 2 is not JSON" in out.stderr
    assert "Traceback" not in out.stderr and time.time() - t0 < 120


def test_paths_inside_a_ray_job(tmp_path, monkeypatch, model, reward):
    """Inside `ray job submit` (Ray's job supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR) a relative output would land in
    the temporary copy of the working dir: refused. A relative input outside the working dir: refused."""
    work = tmp_path / "_ray_pkg_abc"
    (work / "data").mkdir(parents=True)
    _jsonl(work / "data" / "train.jsonl", [GOOD])
    monkeypatch.chdir(work)
    monkeypatch.setenv(
        inputs.RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}})
    )
    args = _args(model, "data/train.jsonl", reward, "--ckpt.output_dir", "checkpoints/run")
    errors = inputs.check_paths(args)
    assert len(errors) == 2, errors  # --ckpt.output_dir, and --ckpt.path at OpenRLHF's relative default
    assert errors[0].startswith("--ckpt.output_dir checkpoints/run (given, or OpenRLHF's default) is relative")
    assert errors[1].startswith("--ckpt.path ./ckpt/checkpoints_ppo_ray")
    args = _args(model, "../elsewhere.jsonl", reward, "--ckpt.output_dir", "/abs/out", "--ckpt.path", "/abs/c")
    (err,) = inputs.check_paths(args)
    assert err.startswith("--data.prompt_dataset ../elsewhere.jsonl points outside the job's working_dir")
    args = _args(model, "data/train.jsonl", reward, "--ckpt.output_dir", "/abs/out", "--ckpt.path", "/abs/c")
    assert inputs.check_paths(args) == [] and args.data.prompt_dataset == "data/train.jsonl"  # on every node


def test_paths_outside_a_ray_job_become_absolute(tmp_path, monkeypatch, model, reward):
    monkeypatch.delenv(inputs.RAY_JOB_CONFIG_ENV, raising=False)
    (tmp_path / "data").mkdir()
    _jsonl(tmp_path / "data" / "train.jsonl", [GOOD])
    monkeypatch.chdir(tmp_path)
    args = _args(model, "data/train.jsonl", reward, "--ckpt.output_dir", "out", "--actor.model_name_or_path",
                       "Qwen/Qwen2.5-3B")  # fmt: skip
    assert inputs.check_paths(args) == []
    for dotted, want in (
        ("data.prompt_dataset", tmp_path / "data" / "train.jsonl"),
        ("ckpt.output_dir", tmp_path / "out"),
        ("ckpt.path", tmp_path / "ckpt" / "checkpoints_ppo_ray"),
    ):
        assert get_flag(args, dotted) == getattr(flatten(args), dotted) == str(want), dotted
    assert args.actor.model_name_or_path == "Qwen/Qwen2.5-3B"  # a hub id is no path


def test_partial_rollouts_refused_with_vllm_logprobs(model, reward, tmp_path):
    data = _jsonl(tmp_path / "train.jsonl", [GOOD])
    with pytest.raises(SystemExit):
        _args(model, data, reward, "--train.async_enable", "--train.partial_rollout_enable")
    args = _args(model, data, reward, "--train.async_enable", "--train.partial_rollout_enable",
                    "--algo.lens.logprob_source", "actor")  # fmt: skip
    assert args.train.partial_rollout_enable
    flat = A.build_parser().parse_args(
        ["--algo.advantage.estimator", "lens", "--train.async_enable", "--train.partial_rollout_enable",
         "--vllm.num_engines", "1", "--rollout.n_samples_per_prompt", "4"]
    )  # fmt: skip
    from openrlhf.utils.config import hierarchize

    errors = A.validate(hierarchize(flat))
    assert any(e.startswith("--train.partial_rollout_enable with --algo.lens.logprob_source vllm") for e in errors)
