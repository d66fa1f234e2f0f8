"""The patch tables: every entry's fingerprint matches the installed release, apply/revert/status work,
and a changed upstream function is reported by entry id (what to re-review)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lens_openrlhf.coupling import COUPLING
from lens_openrlhf.cpu import CPU
from lens_openrlhf.coupling.version import OPENRLHF_VERSION
from lens_openrlhf.errors import UpstreamChanged

TABLES = (COUPLING, CPU)


def test_every_target_matches_the_pinned_release():
    drift = [line for t in TABLES for line in t.drift()]
    assert not drift, (
        "the installed OpenRLHF/vLLM/DeepSpeed differ from what these patches were written against; re-review "
        "each entry (its replacement and the code it depends on), then record the new fingerprint:\n  "
        + "\n  ".join(drift)
    )


def test_tables_cover_every_replacement_and_ids_are_unique():
    ids = [(t.name, p.id) for t in TABLES for p in t.entries]
    assert len(ids) == len(set(ids))
    targets = {p.target for t in TABLES for p in t.entries}
    for expected in (
        "openrlhf.trainer.ppo_utils.experience_maker:RemoteExperienceMaker.compute_advantages_and_returns",
        "openrlhf.trainer.ray:create_vllm_engines",
        "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.ppo_train",
        "openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer.broadcast_to_vllm",
        "openrlhf.trainer.ppo_trainer:BasePPOTrainer.save_logs_and_checkpoints",
    ):
        assert expected in targets
    for t in TABLES:
        for p in t.entries:
            assert p.why and len(p.fingerprint) == 12, p


def test_a_changed_target_is_named_with_its_entry(monkeypatch):
    """Replace an upstream function by one with other source: drift names that entry and only it."""
    from openrlhf.utils import agent

    def execute(self, *args, **kwargs):  # not OpenRLHF's source
        return None

    monkeypatch.setattr(agent.SingleTurnAgentExecutor, "execute", execute)
    drift = COUPLING.drift()
    assert [line.split()[1] for line in drift] == ["R1", "R2"]  # R1 watches execute too
    assert "openrlhf.utils.agent:SingleTurnAgentExecutor.execute" in drift[1] and "re-raises" in drift[1]
    with pytest.raises(UpstreamChanged, match="re-review these patches"):
        COUPLING.check()


def test_apply_revert_status_roundtrip():
    from openrlhf.trainer import ray as ray_pkg
    from openrlhf.trainer.ppo_utils import experience_maker

    before = experience_maker.RemoteExperienceMaker.__dict__["compute_advantages_and_returns"]
    engines_before = ray_pkg.create_vllm_engines
    assert not any(COUPLING.status().values())
    COUPLING.apply()  # untagged entries only
    status = COUPLING.status()
    assert status["A1"] and status["R1"] and status["T2"] and status["S2"] and not status["V2"]
    assert COUPLING.original("A1") is before
    COUPLING.apply(tags=("rollout_logprobs",))
    status = COUPLING.status()
    assert status["V2"] and not status["V3"]
    COUPLING.apply(tags=("rollout_logprobs", "vllm_dtype"))
    assert all(COUPLING.status().values())
    COUPLING.apply(tags=("rollout_logprobs", "vllm_dtype"))  # idempotent: originals stay the upstream ones
    assert COUPLING.original("V2") is engines_before
    COUPLING.revert()
    assert not any(COUPLING.status().values())
    assert experience_maker.RemoteExperienceMaker.__dict__["compute_advantages_and_returns"] is before
    assert ray_pkg.create_vllm_engines is engines_before
    # the Ray subclasses get their own copies back too (T1/T2 live there as well)
    from openrlhf.trainer.ppo_trainer import PPOTrainer

    modified = PPOTrainer.__ray_metadata__.modified_class
    assert COUPLING["T2"].replacement not in modified.__dict__.values()


def test_fingerprint_reads_upstream_source_while_patched():
    """Applied or not, the fingerprint is that of OpenRLHF's code (the originals), so a patched process
    can check itself."""
    before = COUPLING.drift()
    COUPLING.apply(tags=("rollout_logprobs", "vllm_dtype"))
    try:
        assert COUPLING.drift() == before == []
    finally:
        COUPLING.revert()


def test_patches_are_reverted_between_tests_1():
    COUPLING.apply()
    assert COUPLING.applied()


def test_patches_are_reverted_between_tests_2():
    """conftest reverts every table after each test: the apply of the test before left nothing behind."""
    assert COUPLING.applied() == [] and not any(COUPLING.status().values())


def test_worker_hook_refuses_another_openrlhf_release(tmp_path):
    """The Ray worker hook checks the installed OpenRLHF version before patching (a node whose environment
    differs from the driver's fails by name)."""
    code = r"""
import importlib.metadata as md
real = md.version
md.version = lambda name: "9.9.9" if name == "openrlhf" else real(name)
from lens_openrlhf.coupling import launch
try:
    launch.ray_worker_setup()
except Exception as e:
    print(type(e).__name__, e)
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, LENS_OPENRLHF_NO_WORKER_PATCHES="0"),
    )
    assert (
        "UpstreamChanged" in out.stdout
        and "found 9.9.9" in out.stdout
        and f"openrlhf=={OPENRLHF_VERSION}" in out.stdout
    ), out.stderr[-2000:]


def test_every_patch_names_the_tests_that_recheck_it():
    from lens_openrlhf.coupling.upstream import entries

    repo = Path(__file__).resolve().parents[1]
    for table, p in entries():
        assert p.tests, f"{table} {p.id} names no test that re-checks it"
        for t in p.tests:
            assert (repo / t).is_file(), f"{table} {p.id}: {t} does not exist"


def test_upstream_command_reports_a_changed_target(monkeypatch, capsys):
    """``python -m lens_openrlhf.coupling.upstream``: exit 0 on the pinned release; a changed upstream function is
    listed with its entry, why and its tests, and the exit status is 1."""
    from openrlhf.utils import agent

    from lens_openrlhf.coupling import upstream

    assert upstream.main([]) == 0
    n = len(upstream.entries())
    assert f"{n} of {n} patches match the installed packages" in capsys.readouterr().out

    def execute(self, *args, **kwargs):  # not OpenRLHF's source
        return None

    monkeypatch.setattr(agent.SingleTurnAgentExecutor, "execute", execute)
    assert upstream.main([]) == 1
    out = capsys.readouterr().out
    assert "coupling R2    CHANGED  openrlhf.utils.agent:SingleTurnAgentExecutor.execute" in out
    assert "re-checked by: tests/coupling/test_coupling.py" in out and "to re-review" in out


def _function_source(path: str) -> str:
    """The unparsed AST of ``"module:Class.func"`` in the installed source (upstream's, even where patched)."""
    import ast
    import importlib
    import inspect

    module, _, qual = path.partition(":")
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    cls, fn = qual.split(".")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    return ast.unparse(
        next(n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn)
    )


@pytest.mark.parametrize("patch", [p for p in COUPLING.entries + CPU.entries if p.call_sites], ids=lambda p: p.id)
def test_upstream_call_sites_the_patches_rely_on(patch):
    """Each entry's ``call_sites``: the upstream code that must keep calling or reading what the patch relies on
    (T1's and T2's callers in both trainers, S2's per-prompt remote call, ...), found in the installed source."""
    for site, expr in patch.call_sites:
        assert expr.replace(" ", "") in _function_source(site).replace(" ", ""), (
            f"{site} no longer has {expr} (OpenRLHF changed): re-review {patch.id} ({patch.target})"
        )


def test_a_call_site_that_moved_is_found():
    """The check above can fail: an expression that is not in the function is reported."""
    assert "self.save_logs_and_checkpoints" in _function_source("openrlhf.trainer.ppo_trainer:PPOTrainer.fit")
    assert "self.no_such_call" not in _function_source("openrlhf.trainer.ppo_trainer:PPOTrainer.fit")


def test_a_replacement_pickled_into_a_process_without_the_table_calls_upstream():
    """Ray pickles a remote class by value: S3, set on RolloutRayActor in the driver, can run in an engine process whose
    worker hook never applied the table. ``original`` then hands it the upstream method of that process."""
    from openrlhf.trainer.ray import vllm_engine

    from lens_openrlhf.coupling.patches import COUPLING
    from lens_openrlhf.patching import ray_actor_classes

    upstream = ray_actor_classes(vllm_engine.RolloutRayActor)[-1].__dict__["generate_responses"]
    assert "S3" not in COUPLING.applied()
    assert COUPLING.original("S3") is upstream
    COUPLING.apply(tags=("rollout_seeds",))  # applied here: the first owner's (Ray's class's) saved value
    assert COUPLING.original("S3").__name__ == "generate_responses"
    assert COUPLING.original("S3") is not COUPLING["S3"].replacement
