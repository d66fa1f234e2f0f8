"""``--lens.vllm_dtype`` (patch V3): the pinned OpenRLHF's ``create_vllm_engines`` hard-codes ``"dtype": "bfloat16"``;
with the flag the engines run in the dtype given.

The engine is created the way a job creates it: OpenRLHF's own ``create_vllm_engines`` (the hard-coded
bfloat16 call site) in a CPU-mode Ray started with the job's runtime_env (``launch.runtime_env``: the worker
hook applies the patch table in the engine's process), after the driver applied the table. The engine is then
asked for its model config's dtype and generates a few tokens.
"""

import pytest
import torch

from lens_openrlhf import coupling as A
from lens_openrlhf.coupling.vllm_dtype import ENV_VLLM_DTYPE
from lens_openrlhf.localrun.tiny import build_tiny_model
from cpu_jobs import job_argv

BASE = job_argv(kl=0)


def test_flag_goes_to_the_runtime_env_only_when_given():
    args = A.parse_args(BASE + ["--lens.vllm_dtype", "float32"])
    assert A.runtime_env(args)["env_vars"][ENV_VLLM_DTYPE] == "float32"
    args = A.parse_args(BASE)
    assert args.lens.vllm_dtype is None and ENV_VLLM_DTYPE not in A.runtime_env(args)["env_vars"]


def test_unknown_dtype_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        A.parse_args(BASE + ["--lens.vllm_dtype", "bf16"])
    err = capsys.readouterr().err
    assert "--lens.vllm_dtype" in err and "float32" in err and "Traceback" not in err


def test_v3_only_with_its_tag():
    A.install_patches(rollout_logprobs=True)
    assert not A.patches_installed()["V3"]
    A.install_patches(vllm_dtype=True)
    assert A.patches_installed()["V3"]


@pytest.mark.heavy
def test_create_vllm_engines_runs_the_dtype_given(tmp_path, monkeypatch):
    import ray
    from openrlhf.trainer.ray.vllm_engine import create_vllm_engines

    from lens_openrlhf import cpu

    model = build_tiny_model(tmp_path / "model", seed=0)
    args = A.parse_args(
        job_argv("--lens.cpu_mode", "--lens.vllm_dtype", "float32", model=model, reward=tmp_path / "r.py", kl=0)
    )
    (tmp_path / "r.py").write_text("def reward_func(queries, prompts, labels):\n    raise NotImplementedError\n")
    for k in cpu.worker_env():
        monkeypatch.delenv(k, raising=False)  # prepare_driver sets them in os.environ; restored after the test
    cpu.prepare_driver(args)
    A.install_patches(vllm_dtype=bool(args.lens.vllm_dtype))  # the driver, as launch.main does
    ray.init(
        runtime_env=A.runtime_env(args, cpu.worker_env(), [cpu.WORKER_HOOK]),
        **{**cpu.ray_init_kwargs(args), "num_cpus": 2, "log_to_driver": False},
    )
    try:
        # OpenRLHF's own call, with its hard-coded "dtype": "bfloat16"
        (engine,) = create_vllm_engines(1, 1, str(model), 0, False, False, True, 128, None, 0.5)
        dtype = ray.get(engine.__ray_call__.remote(lambda self: str(self.llm.model_config.dtype)), timeout=300)
        from vllm import SamplingParams

        out = ray.get(engine.generate.remote([1, 2, 3], SamplingParams(max_tokens=4, temperature=1.0)), timeout=300)
    finally:
        ray.shutdown()
    assert dtype == str(torch.float32), dtype
    assert len(out.outputs[0].token_ids) >= 1  # and it generates
