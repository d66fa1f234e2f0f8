"""CPU shim of flash_attn (see lens_openrlhf/cpu_shims/__init__.py): NOT the real flash-attn."""

__version__ = "0.0.0+lens_openrlhf_cpu_shim"
IS_LENS_OPENRLHF_SHIM = True
