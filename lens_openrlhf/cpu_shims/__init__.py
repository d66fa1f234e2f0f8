"""Pure-torch stand-ins for the few flash-attn symbols the pinned OpenRLHF touches on import.

flash-attn cannot be installed on a CPU-only machine (it builds only against CUDA), yet
``openrlhf.models.ring_attn_utils`` imports ``flash_attn.bert_padding`` (``pad_input``, ``unpad_input``,
``index_first_axis``, ``rearrange``) and ``flash_attn.utils.distributed.all_gather`` at module level, so
no RL module of OpenRLHF imports without them. These are plain tensor code with the same semantics.

They are used ONLY when the real flash-attn is absent: by the tests and by the CPU mode. On a GPU
cluster the real package is installed and this folder is never put on ``sys.path``.
"""

import importlib.util
import os
import sys

SHIM_DIR = os.path.dirname(os.path.abspath(__file__))


def ensure_flash_attn_importable() -> bool:
    """Put the shim folder on sys.path if flash_attn cannot be imported. Returns True if it did."""
    if importlib.util.find_spec("flash_attn") is not None:
        return False
    if SHIM_DIR not in sys.path:
        sys.path.append(SHIM_DIR)
    return True
