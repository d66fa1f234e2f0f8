"""Upstream drift guard for ``--lens.cpu_mode``.

Lists every ``torch.cuda.*``, ``.cuda()``, CUDA device string and NCCL use in the source files of the
INSTALLED OpenRLHF modules on the PPO path (the modules that ``train_ppo_ray``, the PPO trainers, the
experience maker and the vLLM worker extension import, found by importing them in a subprocess), and fails
when one is not in ``lens_openrlhf.cpu_mode.HANDLED_GPU_USES`` (a new call CPU mode does not handle), or
when the table lists one that is gone (the table must describe the installed code). It also checks that the
patches reach the calls the table says they handle.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import warnings

import pytest

from lens_openrlhf import cpu_mode

LIST_PPO_PATH = r"""
import importlib, json, sys
from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
ensure_flash_attn_importable()
from lens_openrlhf import cpu_mode
for m in cpu_mode.PPO_PATH_ENTRY_MODULES:
    importlib.import_module(m)
mods = {k: v.__file__ for k, v in sorted(sys.modules.items()) if k.split(".")[0] == "openrlhf" and getattr(v, "__file__", None)}
print("PPO_PATH=" + json.dumps(mods))
"""


@pytest.fixture(scope="module")
def ppo_path():
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    out = subprocess.run([sys.executable, "-c", LIST_PPO_PATH], capture_output=True, text=True, timeout=300, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("PPO_PATH=")]
    assert line, out.stderr[-3000:]
    mods = json.loads(line[-1][len("PPO_PATH="):])
    site = os.path.dirname(importlib.util.find_spec("openrlhf").origin)
    assert all(f.startswith(site) for f in mods.values()), "not the installed OpenRLHF"
    # the modules CPU mode patches must be on the path (else the path detection broke)
    assert set(cpu_mode.PROXIED_MODULES) | set(cpu_mode.BARRIER_IMPORTERS) <= set(mods)
    return mods


@pytest.fixture(scope="module")
def uses(ppo_path):
    """(module, qualname, use) -> list of hits (line, local_torch_import)."""
    found = {}
    for mod, path in ppo_path.items():
        with open(path) as f:
            for hit in cpu_mode.scan_gpu_uses(f.read()):
                found.setdefault((mod, hit["qualname"], hit["use"]), []).append(hit)
    return found


def _where(ppo_path, key, hits):
    return f"{ppo_path[key[0]]}:{','.join(str(h['line']) for h in hits)}  {key[1]}: {key[2]}"


def test_every_gpu_use_on_the_ppo_path_is_handled(ppo_path, uses):
    missing = {k: v for k, v in uses.items() if k not in cpu_mode.HANDLED_GPU_USES}
    assert not missing, (
        "OpenRLHF has GPU-specific code that --lens.cpu_mode does not handle (upstream drift?); handle it in "
        "lens_openrlhf/cpu_mode.py and add it to HANDLED_GPU_USES:\n  "
        + "\n  ".join(_where(ppo_path, k, v) for k, v in missing.items())
    )


def test_handled_table_matches_the_installed_code(uses):
    stale = sorted(set(cpu_mode.HANDLED_GPU_USES) - set(uses))
    assert not stale, f"HANDLED_GPU_USES lists uses the installed OpenRLHF no longer has: {stale}"


def test_scan_finds_the_known_kinds():
    src = '''
import torch
from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
class A:
    def f(self, x):
        """docstring mentioning NCCL, 'nccl' and torch.cuda is ignored"""
        d = torch.cuda.current_device()
        y = x.cuda()
        z = torch.device(f"cuda:{d}")
        return x.to("cuda"), backend == "nccl"
def g():
    import torch
    torch.cuda.synchronize()
'''
    got = {(h["qualname"], h["use"], h["local_torch_import"]) for h in cpu_mode.scan_gpu_uses(src)}
    assert got == {
        ("<module>", "nccl:from vllm.distributed.device_communicators.pynccl", False),
        ("<module>", "nccl:import PyNcclCommunicator", False),
        ("A.f", "torch.cuda.current_device", False),
        ("A.f", ".cuda()", False),
        ("A.f", "f'cuda:...'", False),
        ("A.f", "'cuda'", False),
        ("A.f", "nccl:'nccl'", False),
        ("g", "torch.cuda.synchronize", True),
    }


def test_p1_entries_are_reached_by_the_torch_proxy(ppo_path, uses):
    """A call handled by the module-level torch proxy must be in a proxied module, use the module's torch
    (no local ``import torch``) and name a torch.cuda function the proxy provides."""
    for key, how in cpu_mode.HANDLED_GPU_USES.items():
        if not how.startswith("P1") or key not in uses:
            continue
        mod, qual, use = key
        assert mod in cpu_mode.PROXIED_MODULES, key
        assert not any(h["local_torch_import"] for h in uses[key]), f"{_where(ppo_path, key, uses[key])}: local import torch"
        if use.startswith("torch.cuda."):
            assert use.split(".", 2)[2] in cpu_mode.CUDA_STANDINS, key
        else:
            assert use in ("f'cuda:...'", "'cuda'"), key


def _imported_names(path, source_module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(open(path).read())
    return {
        (a.asname or a.name)
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == source_module
        for a in n.names
    }


def test_p2_p3_reach_every_importer(ppo_path):
    """``torch_dist_barrier_and_cuda_sync`` and ``init_device_mesh`` are imported BY NAME: CPU mode replaces
    the name in each importing module, so a new importer upstream would escape the patch."""
    barrier = {m for m, p in ppo_path.items() if "torch_dist_barrier_and_cuda_sync" in _imported_names(p, "openrlhf.utils.distributed_util")}
    assert barrier | {"openrlhf.utils.distributed_util"} == set(cpu_mode.BARRIER_IMPORTERS), barrier
    mesh = {m for m, p in ppo_path.items() if "init_device_mesh" in _imported_names(p, "torch.distributed.device_mesh")}
    assert mesh == {"openrlhf.utils.deepspeed.deepspeed"}, mesh


def test_refused_entries_name_a_refused_flag():
    refused_flags = {flag.split()[0] for flag, _, _ in cpu_mode.REFUSED_FLAGS}
    for key, how in cpu_mode.HANDLED_GPU_USES.items():
        if how.startswith("refused"):
            flags = {w.rstrip(",)") for w in how.split() if w.startswith("--")}
            assert flags and flags <= refused_flags, (key, how, refused_flags)


def test_stand_ins():
    import torch

    t = cpu_mode.torch_cpu
    assert t.cuda.current_device() == torch.device("cpu")
    assert t.device(f"cuda:{t.cuda.current_device()}") == torch.device("cpu")
    assert t.device("cpu") == torch.device("cpu") and t.device("meta").type == "meta"
    assert t.cuda.synchronize() is None and t.cuda.empty_cache() is None and t.cuda.set_device(0) is None
    assert t.cuda.is_available() is False
    assert t.tensor([1.0]).device.type == "cpu" and t.no_grad is torch.no_grad and t.distributed is torch.distributed
    with pytest.raises(AttributeError, match="torch.cuda.mem_get_info is not handled"):
        t.cuda.mem_get_info()


def test_proxy_pickles_by_name():
    """Ray pickles @ray.remote classes by value with the globals they use: the proxy must travel by name."""
    from ray import cloudpickle

    for mod in (cpu_mode.torch_cpu, cpu_mode.torch_cuda_cpu):
        blob = cloudpickle.dumps(mod)
        assert len(blob) < 200 and cloudpickle.loads(blob) is mod
    code = (
        "import sys, ray.cloudpickle as c; m = c.loads(sys.stdin.buffer.read()); "
        "print(m.__name__, m.cuda.current_device())"
    )
    out = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(cpu_mode.torch_cpu), capture_output=True, timeout=120)
    assert out.stdout.decode().split() == ["lens_openrlhf.cpu_mode._torch", "cpu"], out.stderr.decode()[-2000:]


INSTALL_CHECK = r"""
import json, pickle
from lens_openrlhf import cpu_mode
cpu_mode.install()
cpu_mode.install()  # idempotent
res = cpu_mode.installed()
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
res["replay buffer on cpu"] = str(NaiveReplayBuffer(4).target_device) == "cpu"
from openrlhf.utils.deepspeed import deepspeed as ds
from types import SimpleNamespace
class S:  # the original get_ds_train_config needs only these attributes
    adam_offload = False; stage = 2; param_dtype = "bf16"; max_norm = 1.0; zpg = 1; grad_accum_dtype = None
    overlap_comm = False; use_ds_universal_ckpt = False; deepcompile = False; ds_tensor_parallel_size = 1
    use_dynamic_batch = False; micro_train_batch_size = 1; train_batch_size = 1; ring_attn_size = 1
cfg = ds.DeepspeedStrategy.get_ds_train_config(S(), {"type": "AdamW", "params": {"lr": 1e-3}}, max_norm=1.0)
res["torch_adam"] = cfg["optimizer"]["params"].get("torch_adam") is True
print("INSTALLED=" + json.dumps(res))
"""


def test_install_patches_everything_it_claims():
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    out = subprocess.run([sys.executable, "-c", INSTALL_CHECK], capture_output=True, text=True, timeout=300, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("INSTALLED=")]
    assert line, out.stderr[-3000:]
    res = json.loads(line[-1][len("INSTALLED="):])
    assert all(res.values()), res
