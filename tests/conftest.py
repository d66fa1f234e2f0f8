"""Shared test set-up.

- flash-attn cannot exist on CPU: the pure-tensor shim in lens_openrlhf/cpu_shims (flash_attn.bert_padding
  and flash_attn.utils.distributed.all_gather, the only symbols OpenRLHF touches on import) is put on
  sys.path when the real package is absent, so the REAL OpenRLHF modules import here.
- Nothing reaches a hub: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, W&B disabled.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from lens_openrlhf.cpu_shims import ensure_flash_attn_importable  # noqa: E402

ensure_flash_attn_importable()
