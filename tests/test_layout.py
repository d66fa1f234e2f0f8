"""The package's architecture, checked: a few shared modules at the top and the rest in packages named for their
concern, no import cycle, the product never imports the demo, CPU mode's only arrows back are to leaf modules, the
math module imports no OpenRLHF, module sizes stay readable, and every module has a test file named after it or
its package."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "lens_openrlhf"
#: modules allowed over MAX_LINES, and why
LONG_MODULES = {
    "lens_openrlhf.estimators": "the registry: every estimator's math, options and help in one readable file",
}
MAX_LINES = 450
#: the packages of lens_openrlhf, by concern
PACKAGES = {"coupling", "cpu", "cpu_shims", "rewards", "data", "evaluation", "demo", "localrun"}
#: what only the demo (and tests, benchmarks) may import
DEMO = "lens_openrlhf.demo"


def _modules():
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if "cpu_shims" in parts and len(parts) > 2:
            continue  # the flash_attn stand-in package, put on sys.path as "flash_attn"
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known) -> set:
    """Modules of the package that ``name`` imports at module level or in functions (any import counts)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                found.add(full if full in known else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != name}


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_no_import_cycle(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_cpu_mode_points_back_only_to_leaf_modules(graph):
    leaves = {"lens_openrlhf.errors", "lens_openrlhf.placement", "lens_openrlhf.patching", "lens_openrlhf.cpu_shims"}
    leaves.add("lens_openrlhf.dotted")
    for name, deps in graph.items():
        if name.startswith("lens_openrlhf.cpu.") or name == "lens_openrlhf.cpu":
            outside = {d for d in deps if not d.startswith("lens_openrlhf.cpu")} - leaves
            assert not outside, f"{name} imports {outside}"
    for leaf in ("lens_openrlhf.errors", "lens_openrlhf.placement", "lens_openrlhf.dotted"):
        assert graph[leaf] == set(), f"{leaf} must import nothing of the package"
    assert graph["lens_openrlhf.patching"] <= {"lens_openrlhf.errors"}


def test_the_math_knows_no_openrlhf():
    tree = ast.parse((PKG / "estimators.py").read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
    assert not roots & {"openrlhf", "ray", "vllm", "deepspeed"}, roots


def test_modules_stay_readable():
    too_long = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    too_long = {n: k for n, k in too_long.items() if k > MAX_LINES and n not in LONG_MODULES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them, or say why in LONG_MODULES): {too_long}"


def test_a_few_shared_modules_at_the_top_and_packages_by_concern():
    top = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    assert len(top) <= 10, f"{len(top)} modules directly under lens_openrlhf/ (at most 10): {top}"
    assert {"estimators", "train_ppo_ray"} <= set(top)
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    assert packages == PACKAGES, f"packages {sorted(packages)}; the layout test names {sorted(PACKAGES)}"


def test_the_product_never_imports_the_demo(graph):
    for name, deps in graph.items():
        if not name.startswith(DEMO):
            assert not {d for d in deps if d.startswith(DEMO)}, f"{name} imports the demo: {deps}"


def test_no_re_export_facades():
    """A module that only hands on other modules' names for compatibility is a second door to one thing: the
    package __init__ files of the coupling and of CPU mode name their public interface; nothing else re-exports."""
    for name, path in _modules().items():
        body = ast.parse(path.read_text()).body
        if any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets) for n in body):
            assert name in ("lens_openrlhf.estimators", "lens_openrlhf.coupling", "lens_openrlhf.cpu"), name


def test_every_module_is_tested_where_a_reader_looks():
    """Tests are findable from the module they test: package P's tests are under tests/P/ and import P; a shared
    top-level module is imported by a test named after it or by some test under tests/."""
    import re

    tests = Path(__file__).resolve().parent
    exempt = {"cpu_shims": "tests/conftest.py imports OpenRLHF through it in every test"}
    missing = []
    for name in _modules():
        parts = name.split(".")[1:]
        if not parts or parts[0] in exempt or parts[-1] == "__main__":
            continue
        if len(parts) > 1 or (PKG / parts[0]).is_dir():
            folder = tests / parts[0]
            pattern = re.compile(rf"lens_openrlhf\.{parts[0]}\b|from lens_openrlhf import {parts[0]}\b")
            if not folder.is_dir() or not any(pattern.search(f.read_text()) for f in folder.glob("test_*.py")):
                missing.append(f"{name}: tests/{parts[0]}/ has no test importing lens_openrlhf.{parts[0]}")
        else:
            pattern = re.compile(rf"lens_openrlhf\.{parts[0]}\b|from lens_openrlhf import [^\n]*\b{parts[0]}\b")
            if not any(pattern.search(f.read_text()) for f in tests.rglob("test_*.py")):
                missing.append(f"{name}: no test imports it")
    assert not missing, "\n".join(missing)
