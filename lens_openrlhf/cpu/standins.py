"""P1, P2: ``torch.cuda`` stand-ins for OpenRLHF's modules on a CPU (see :mod:`lens_openrlhf.cpu`).

P1 replaces the global ``torch`` of :data:`PROXIED_MODULES` by :data:`torch_cpu`, a module that is the real
torch except ``torch.cuda`` (CPU stand-ins; anything else raises, naming itself) and ``torch.device("cuda:..")``
(-> cpu). P2 replaces ``torch_dist_barrier_and_cuda_sync`` in the modules that imported it by name.
"""

from __future__ import annotations

import sys
import types

import torch

from .profile import PREFIX

_CPU = torch.device("cpu")


def cuda_current_device():
    """``torch.cuda.current_device()`` -> the CPU device (used as ``.to(device)`` / ``device=``)."""
    return _CPU


def cuda_noop(*args, **kwargs) -> None:
    """``torch.cuda.synchronize/empty_cache/set_device``: nothing to do on a CPU."""
    return None


class _NoStream:
    pass


def cuda_current_stream(*args, **kwargs):
    """``torch.cuda.current_stream()``: only passed to NCCL broadcasts, which CPU mode replaces."""
    return _NoStream()


def cuda_is_available() -> bool:
    return False


def _cuda_getattr(name: str):
    raise AttributeError(
        f"{PREFIX}: torch.cuda.{name} is not handled on CPU (OpenRLHF changed? see HANDLED_GPU_USES in "
        "lens_openrlhf/cpu/ and tests/cpu/test_cpu_mode_drift.py)"
    )


def torch_device(*args, **kwargs):
    """``torch.device(...)`` with any CUDA device mapped to the CPU (replay_buffer.py: ``f"cuda:{...}"``)."""
    spec = args[0] if args else kwargs.get("type")
    if isinstance(spec, str) and spec.startswith("cuda"):
        return _CPU
    if isinstance(spec, torch.device) and spec.type == "cuda":
        return _CPU
    return torch.device(*args, **kwargs)


def _torch_getattr(name: str):
    return getattr(torch, name)


CUDA_STANDINS = {
    "current_device": cuda_current_device,
    "synchronize": cuda_noop,
    "empty_cache": cuda_noop,
    "set_device": cuda_noop,
    "current_stream": cuda_current_stream,
    "is_available": cuda_is_available,
}


def _make_module(name: str, attrs: dict, getattr_fn) -> types.ModuleType:
    mod = sys.modules.get(name)
    if mod is None:
        # A plain ModuleType (not a subclass): cloudpickle pickles it by name, and `__import__(name)` finds it
        # in sys.modules once lens_openrlhf.cpu.standins is imported (which the worker hook does first).
        mod = types.ModuleType(name, f"{PREFIX}: stand-in, see lens_openrlhf/cpu/standins.py")
        sys.modules[name] = mod
    mod.__dict__.update(attrs)
    mod.__getattr__ = getattr_fn  # PEP 562: everything else
    return mod


torch_cuda_cpu = _make_module(__name__ + "._torch_cuda", dict(CUDA_STANDINS), _cuda_getattr)
torch_cpu = _make_module(__name__ + "._torch", {"cuda": torch_cuda_cpu, "device": torch_device}, _torch_getattr)

#: modules whose global ``torch`` is replaced by :data:`torch_cpu` (P1)
PROXIED_MODULES = (
    "openrlhf.utils.deepspeed.deepspeed",
    "openrlhf.utils.deepspeed.deepspeed_utils",
    "openrlhf.trainer.ray.ppo_actor",
    "openrlhf.trainer.ray.ppo_critic",
    "openrlhf.trainer.ray.launcher",
    "openrlhf.trainer.ppo_utils.replay_buffer",
)
#: modules that imported ``torch_dist_barrier_and_cuda_sync`` by name (P2)
BARRIER_IMPORTERS = (
    "openrlhf.utils.distributed_util",
    "openrlhf.utils.deepspeed.deepspeed",
    "openrlhf.trainer.ray.ppo_actor",
)


def torch_dist_barrier_and_cuda_sync() -> None:
    """P2: ``torch.distributed.barrier()`` without ``torch.cuda.synchronize()``."""
    torch.distributed.barrier()
