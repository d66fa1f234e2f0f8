"""The OpenRLHF release this coupling is written against, and the check that it is the one installed."""

from __future__ import annotations

import importlib.metadata

from ..errors import exit_with

OPENRLHF_VERSION = "0.11.2"


def installed_openrlhf_version() -> str:
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError:
        return ""


def version_problem() -> str:
    """'' when the installed OpenRLHF is the pinned one, else what is wrong and what to do."""
    v = installed_openrlhf_version()
    if not v:
        return f"OpenRLHF is not installed: pip install openrlhf=={OPENRLHF_VERSION} (see README.md)"
    if v != OPENRLHF_VERSION:
        return (
            f"lens_openrlhf extends OpenRLHF {OPENRLHF_VERSION} (its parser and trainer internals); "
            f"found {v}: pip install openrlhf=={OPENRLHF_VERSION}"
        )
    return ""


def check_openrlhf_version() -> str:
    """Exit with a message unless the installed OpenRLHF is :data:`OPENRLHF_VERSION`; return the version."""
    problem = version_problem()
    if problem:
        exit_with(problem)
    return OPENRLHF_VERSION
