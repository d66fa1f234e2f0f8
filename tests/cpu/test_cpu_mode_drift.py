"""Upstream drift guard for ``--lens.cpu_mode``.

Lists every ``torch.cuda.*``, ``.cuda()``, CUDA device string and NCCL use in the source files of the
INSTALLED OpenRLHF modules on the PPO path (the modules that ``train_ppo_ray``, the PPO trainers, the
experience maker and the vLLM worker extension import, found by importing them in a subprocess), and fails
when one is not in ``lens_openrlhf.HANDLED_GPU_USES`` (a new call CPU mode does not handle), or
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
from typing import Dict, List, Tuple

import pytest

from lens_openrlhf import cpu as cpu_mode

#: Modules whose imports define "the PPO path" (what `python -m lens_openrlhf.train_ppo_ray` loads, plus
#: what the vLLM engine process and the trainer actors load).
PPO_PATH_ENTRY_MODULES = (
    "openrlhf.cli.train_ppo_ray",
    "openrlhf.trainer.ppo_trainer",
    "openrlhf.trainer.ppo_trainer_async",
    "openrlhf.trainer.ray.vllm_worker_wrap",
    "openrlhf.trainer.ppo_utils.experience_maker",
)


def _docstring_nodes(tree) -> set:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def scan_gpu_uses(source: str) -> List[dict]:
    """Every GPU-specific use in ``source``: ``{"qualname", "use", "line", "local_torch_import"}``.

    ``use`` is one of ``torch.cuda.<attr>``, ``.cuda()``, ``'cuda'`` / ``f'cuda:...'`` (device strings),
    ``nccl:<identifier or string>``. ``qualname`` is the enclosing ``Class.function`` (``<module>`` at top
    level). ``local_torch_import``: the enclosing function imports torch itself (a module-level proxy, P1,
    does not reach such a call). Docstrings and comments are ignored.
    """
    import warnings

    with warnings.catch_warnings():  # invalid escape sequences in the scanned sources are not our business
        warnings.simplefilter("ignore")
        tree = ast.parse(source)
    docstrings = _docstring_nodes(tree)
    found: List[dict] = []

    def local_torch(func) -> bool:
        if func is None:
            return False
        for n in ast.walk(func):
            if isinstance(n, ast.Import) and any(a.name == "torch" or a.name.startswith("torch.") for a in n.names):
                return True
        return False

    def visit(node, scope: List[str], func):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = scope + [node.name]
            if not isinstance(node, ast.ClassDef):
                func = node
        use = None
        if isinstance(node, ast.Attribute):
            v = node.value
            if (
                isinstance(v, ast.Attribute)
                and v.attr == "cuda"
                and isinstance(v.value, ast.Name)
                and v.value.id == "torch"
            ):
                use = f"torch.cuda.{node.attr}"
            elif "nccl" in node.attr.lower():
                use = f"nccl:{node.attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cuda":
            use = ".cuda()"
        elif isinstance(node, ast.Name) and "nccl" in node.id.lower():
            use = f"nccl:{node.id}"
        elif isinstance(node, ast.alias) and "nccl" in node.name.lower():
            use = f"nccl:import {node.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and "nccl" in node.module.lower():
            use = f"nccl:from {node.module}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            s = node.value
            if s.strip().lower() == "cuda" or (s.lower().startswith("cuda:") and len(s) < 12):
                use = repr(s)
            elif "nccl" in s.lower():
                use = f"nccl:{s[:40]!r}"
        elif isinstance(node, ast.JoinedStr):
            head = node.values[0] if node.values else None
            if isinstance(head, ast.Constant) and isinstance(head.value, str) and head.value.lower().startswith("cuda"):
                use = "f'cuda:...'"
        if use is not None:
            found.append(
                {
                    "qualname": ".".join(scope) or "<module>",
                    "use": use,
                    "line": getattr(node, "lineno", None),
                    "local_torch_import": local_torch(func),
                }
            )
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.JoinedStr) and use is not None:
                continue  # the f-string's parts are part of this use
            visit(child, scope, func)

    visit(tree, [], None)
    return found


_PPO_ACTOR = "openrlhf.trainer.ray.ppo_actor"
_CRITIC = "openrlhf.trainer.ray.ppo_critic"
_LAUNCHER = "openrlhf.trainer.ray.launcher"
_RB = "openrlhf.trainer.ppo_utils.replay_buffer"
_DS = "openrlhf.utils.deepspeed.deepspeed"
_DSU = "openrlhf.utils.deepspeed.deepspeed_utils"
_WRAP = "openrlhf.trainer.ray.vllm_worker_wrap"
_DU = "openrlhf.utils.distributed_util"
_UNUSED_SYNC = "unused: P5 replaces the NCCL/CUDA-IPC weight sync (broadcast_to_vllm, update_weight, no sync group)"

#: (module, enclosing function, use) -> how CPU mode handles it. The first word is the kind:
#: ``P1``..``P5`` (a patch of lens_openrlhf.cpu), ``refused`` (a flag CPU mode refuses, so the code is not reached),
#: ``unused`` (replaced code, not reached), ``guarded`` (the code checks ``torch.cuda.is_available()``),
#: ``cpu-value`` (a flag value CPU mode sets). this file checks this table against
#: :func:`scan_gpu_uses` over the installed OpenRLHF's PPO-path modules, both ways.
HANDLED_GPU_USES: Dict[Tuple[str, str, str], str] = {
    (
        "openrlhf.cli.train_ppo_ray",
        "train",
        "nccl:'NCCL_DEBUG'",
    ): "unused: an env var of the ray.init in train(); the adapter starts Ray itself",
    (
        "openrlhf.cli.train_ppo_ray",
        "<module>",
        "nccl:'nccl'",
    ): "cpu-value: --vllm.sync_backend defaults to nccl; CPU mode sets gloo",
    (
        "openrlhf.models.ring_attn_utils",
        "reset_ring_attn_position_ids",
        "torch.cuda.current_device",
    ): "refused: --ds.ring_attn_size > 1 (and cpu-value: --ds.packing_samples off)",
    (_RB, "NaiveReplayBuffer.__init__", "f'cuda:...'"): "P1: torch.device('cuda:<current_device>') -> cpu",
    (
        _RB,
        "NaiveReplayBuffer.setup_dynamic_batch",
        "torch.cuda.current_device",
    ): "P1 (and cpu-value: --train.dynamic_batch_enable off)",
    (_LAUNCHER, "BaseModelActor.empty_cache", "torch.cuda.empty_cache"): "P1",
    (_LAUNCHER, "BaseModelActor.empty_cache", "torch.cuda.synchronize"): "P1",
    (_LAUNCHER, "ReferenceModelActor.forward", "torch.cuda.current_device"): "P1",
    (_LAUNCHER, "RewardModelActor.forward", "torch.cuda.current_device"): "P1",
    (
        _PPO_ACTOR,
        "ActorPPOTrainer.__init__",
        "nccl:'nccl'",
    ): "cpu-value: --vllm.sync_backend gloo (no CUDA IPC); P5 replaces _init_vllm_sync_group",
    (_PPO_ACTOR, "ActorPPOTrainer._init_vllm_sync_group", "torch.cuda.current_device"): "P5: replaced (no sync group)",
    (_PPO_ACTOR, "ActorPPOTrainer.ppo_train", "torch.cuda.current_device"): "P1",
    (
        _PPO_ACTOR,
        "ActorPPOTrainer.training_step",
        "'cuda'",
    ): "refused: --train.enable_ema (the EMA update runs on 'cuda')",
    (
        _PPO_ACTOR,
        "ActorPPOTrainer.broadcast_to_vllm",
        "torch.cuda.empty_cache",
    ): "P5: replaced by broadcast_to_vllm_cpu",
    (
        _PPO_ACTOR,
        "ActorPPOTrainer.broadcast_to_vllm._broadcast_param",
        "torch.cuda.current_stream",
    ): "P5: replaced by broadcast_to_vllm_cpu",
    (
        _PPO_ACTOR,
        "PolicyModelActor.init_model_from_pretrained",
        "nccl:'nccl'",
    ): "cpu-value: --vllm.sync_backend gloo skips the NCCL env branch",
    (
        _PPO_ACTOR,
        "PolicyModelActor.init_model_from_pretrained",
        "nccl:'NCCL_CUMEM_ENABLE'",
    ): "cpu-value: --vllm.sync_backend gloo skips the NCCL env branch",
    (_PPO_ACTOR, "PolicyModelActor.fit", "torch.cuda.empty_cache"): "P1",
    (_PPO_ACTOR, "PolicyModelActor.fit", "torch.cuda.synchronize"): "P1",
    (_PPO_ACTOR, "PolicyModelActor.forward", "torch.cuda.current_device"): "P1",
    (
        _CRITIC,
        "CriticPPOTrainer.ppo_train",
        "torch.cuda.current_device",
    ): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (
        _CRITIC,
        "CriticModelActor.forward",
        "torch.cuda.current_device",
    ): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (
        _CRITIC,
        "CriticModelActor.fit",
        "torch.cuda.empty_cache",
    ): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    (
        _CRITIC,
        "CriticModelActor.fit",
        "torch.cuda.synchronize",
    ): "P1 (and refused: the critic, --algo.advantage.estimator gae)",
    ("openrlhf.trainer.ray.utils", "get_physical_gpu_id", "torch.cuda.current_device"): _UNUSED_SYNC,
    ("openrlhf.trainer.ray.utils", "get_physical_gpu_id", "torch.cuda.get_device_properties"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.init_process_group", "nccl:'nccl'"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight", "'cuda'"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight", "torch.cuda.current_stream"): _UNUSED_SYNC,
    (_WRAP, "WorkerWrap.update_weight_cuda_ipc", "torch.cuda.synchronize"): _UNUSED_SYNC,
    (_DS, "DeepspeedStrategy.setup_distributed", "torch.cuda.set_device"): "P1 (a no-op) and P3 (gloo first)",
    (_DS, "DeepspeedStrategy.setup_distributed", "'cuda'"): "P3: init_device_mesh('cuda', ...) -> 'cpu'",
    (
        _DS,
        "DeepspeedStrategy._ds_init_train_model",
        "torch.cuda.empty_cache",
    ): "P1 (reached with --ds.tensor_parallel_size > 1: AutoTP)",
    (_DS, "DeepspeedStrategy.all_reduce", "torch.cuda.current_device"): "P1",
    (_DS, "DeepspeedStrategy.all_gather", "torch.cuda.current_device"): "P1",
    (_DSU, "offload_deepspeed_states", "torch.cuda.empty_cache"): "cpu-value: --ds.enable_sleep off (and P1)",
    (_DSU, "offload_deepspeed_states", "torch.cuda.synchronize"): "cpu-value: --ds.enable_sleep off (and P1)",
    (_DSU, "reload_deepspeed_states", "torch.cuda.empty_cache"): "cpu-value: --ds.enable_sleep off",
    (_DSU, "reload_deepspeed_states", "torch.cuda.synchronize"): "cpu-value: --ds.enable_sleep off",
    (
        _DU,
        "torch_dist_barrier_and_cuda_sync",
        "torch.cuda.synchronize",
    ): "P2: the name is replaced in every module that imports it",
    (_DU, "stateless_init_process_group", "nccl:from vllm.distributed.device_communicators.pynccl"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:import PyNcclCommunicator"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:PyNcclCommunicator"): _UNUSED_SYNC,
    (_DU, "stateless_init_process_group", "nccl:pynccl"): _UNUSED_SYNC,
    (
        "openrlhf.utils.loss_utils",
        "_optimizer_step_loss_norm",
        "torch.cuda.is_available",
    ): "guarded: is_available() is False on a CPU",
    (
        "openrlhf.utils.loss_utils",
        "_optimizer_step_loss_norm",
        "torch.cuda.current_device",
    ): "guarded: is_available() is False on a CPU",
}


LIST_PPO_PATH = r"""
import importlib, json, sys
from lens_openrlhf.cpu_shims import ensure_flash_attn_importable
ensure_flash_attn_importable()
for m in json.loads(sys.argv[1]):
    importlib.import_module(m)
mods = {k: v.__file__ for k, v in sorted(sys.modules.items())
        if k.split(".")[0] == "openrlhf" and getattr(v, "__file__", None)}
print("PPO_PATH=" + json.dumps(mods))
"""


@pytest.fixture(scope="module")
def ppo_path():
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    out = subprocess.run(
        [sys.executable, "-c", LIST_PPO_PATH, json.dumps(PPO_PATH_ENTRY_MODULES)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    line = [l for l in out.stdout.splitlines() if l.startswith("PPO_PATH=")]
    assert line, out.stderr[-3000:]
    mods = json.loads(line[-1][len("PPO_PATH=") :])
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
            for hit in scan_gpu_uses(f.read()):
                found.setdefault((mod, hit["qualname"], hit["use"]), []).append(hit)
    return found


def _where(ppo_path, key, hits):
    return f"{ppo_path[key[0]]}:{','.join(str(h['line']) for h in hits)}  {key[1]}: {key[2]}"


@pytest.mark.heavy
def test_every_gpu_use_on_the_ppo_path_is_handled(ppo_path, uses):
    missing = {k: v for k, v in uses.items() if k not in HANDLED_GPU_USES}
    assert not missing, (
        "OpenRLHF has GPU-specific code that --lens.cpu_mode does not handle (upstream drift?); handle it in "
        "lens_openrlhf/cpu/ and add it to HANDLED_GPU_USES:\n  "
        + "\n  ".join(_where(ppo_path, k, v) for k, v in missing.items())
    )


@pytest.mark.heavy
def test_handled_table_matches_the_installed_code(uses):
    stale = sorted(set(HANDLED_GPU_USES) - set(uses))
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
    got = {(h["qualname"], h["use"], h["local_torch_import"]) for h in scan_gpu_uses(src)}
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


@pytest.mark.heavy
def test_p1_entries_are_reached_by_the_torch_proxy(ppo_path, uses):
    """A call handled by the module-level torch proxy must be in a proxied module, use the module's torch
    (no local ``import torch``) and name a torch.cuda function the proxy provides."""
    for key, how in HANDLED_GPU_USES.items():
        if not how.startswith("P1") or key not in uses:
            continue
        mod, qual, use = key
        assert mod in cpu_mode.PROXIED_MODULES, key
        assert not any(h["local_torch_import"] for h in uses[key]), (
            f"{_where(ppo_path, key, uses[key])}: local import torch"
        )
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


@pytest.mark.heavy
def test_p2_p3_reach_every_importer(ppo_path):
    """``torch_dist_barrier_and_cuda_sync`` and ``init_device_mesh`` are imported BY NAME: CPU mode replaces
    the name in each importing module, so a new importer upstream would escape the patch."""
    barrier = {
        m
        for m, p in ppo_path.items()
        if "torch_dist_barrier_and_cuda_sync" in _imported_names(p, "openrlhf.utils.distributed_util")
    }
    assert barrier | {"openrlhf.utils.distributed_util"} == set(cpu_mode.BARRIER_IMPORTERS), barrier
    mesh = {m for m, p in ppo_path.items() if "init_device_mesh" in _imported_names(p, "torch.distributed.device_mesh")}
    assert mesh == {"openrlhf.utils.deepspeed.deepspeed"}, mesh


def test_refused_entries_name_a_refused_flag():
    refused_flags = {flag.split()[0] for flag, _, _ in cpu_mode.REFUSED_FLAGS}
    for key, how in HANDLED_GPU_USES.items():
        if how.startswith("refused"):
            flags = {w.rstrip(",)") for w in how.split("cpu-value")[0].split() if w.startswith("--")}
            assert flags and flags <= refused_flags, (key, how, refused_flags)


def test_cpu_value_entries_name_a_flag_cpu_mode_sets():
    set_flags = {"--" + dotted for dotted in cpu_mode.CPU_VALUES}
    for key, how in HANDLED_GPU_USES.items():
        if "cpu-value" in how:
            flags = {w.rstrip(",)") for w in how.split("cpu-value")[1].split() if w.startswith("--")}
            assert flags and flags <= set_flags, (key, how, set_flags)


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
    out = subprocess.run(
        [sys.executable, "-c", code], input=cloudpickle.dumps(cpu_mode.torch_cpu), capture_output=True, timeout=120
    )
    assert out.stdout.decode().split() == ["lens_openrlhf.cpu.standins._torch", "cpu"], out.stderr.decode()[-2000:]


INSTALL_CHECK = r"""
import json, pickle
from lens_openrlhf import cpu
cpu.install()
cpu.install()  # idempotent
res = cpu.installed()
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


@pytest.mark.heavy
def test_install_patches_everything_it_claims():
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    out = subprocess.run([sys.executable, "-c", INSTALL_CHECK], capture_output=True, text=True, timeout=300, env=env)
    line = [l for l in out.stdout.splitlines() if l.startswith("INSTALLED=")]
    assert line, out.stderr[-3000:]
    res = json.loads(line[-1][len("INSTALLED=") :])
    assert all(res.values()), res
