"""README.md and docs/: every relative link reaches a file, every `#anchor` a heading of that file, and no
placeholder is left; the README stays a front door (at most 200 lines)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set:
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", page.read_text(), flags=re.M)}


def test_slug_follows_github():
    assert slug("Does RL raise correctness here?") == "does-rl-raise-correctness-here"
    assert slug("`--format-lesson`: the format is what rises") == "--format-lesson-the-format-is-what-rises"
    assert slug("CPU mode on both kinds of CPU") == "cpu-mode-on-both-kinds-of-cpu"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_placeholder_left(page):
    """An upper-case WORD_WORD outside code (fenced blocks and `spans`) is a placeholder someone forgot to fill."""
    prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    prose = re.sub(r"`[^`]*`", "", prose)
    left = re.findall(r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b", prose)
    assert not left, f"{page.name}: placeholders left in the text: {sorted(set(left))}"


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; reference belongs in docs/"
    for command in ("make demo", "make test", "ray job submit", "--advantage_estimator lens"):
        assert command in "\n".join(lines), command


def test_counts_in_the_docs_come_from_the_code():
    """Numbers the README and docs state about the code (flag tables, patch tables) are the code's."""
    from lens_openrlhf.coupling.parser import FLAT_FLAGS, FLAT_FLAGS_WITHOUT_EQUIVALENT

    readme = (REPO / "README.md").read_text()
    assert f"{len(FLAT_FLAGS)} flat names of OpenRLHF <= 0.10 are" in readme
    assert f"{len(FLAT_FLAGS_WITHOUT_EQUIVALENT)} without an equivalent are refused" in readme
    assert f"{len(FLAT_FLAGS)} in all) are translated" in (REPO / "docs" / "cli.md").read_text()
    from lens_openrlhf.coupling import upstream
    from lens_openrlhf.cpu.patches import CPU

    n = len(upstream.entries())
    upgrading = (REPO / "docs" / "upgrading-openrlhf.md").read_text()
    assert f"   {n} of {n} patches match the installed packages" in upgrading
    ids = sorted({re.match(r"P\d+", p.id).group() for p in CPU.entries}, key=lambda i: int(i[1:]))
    assert f"(`lens_openrlhf/cpu/patches.py`, {ids[0]}-{ids[-1]})" in (REPO / "docs" / "cpu-mode.md").read_text()
    arch = (REPO / "docs" / "architecture.md").read_text()
    for pid in ids:
        assert pid in arch, f"docs/architecture.md does not name CPU mode's {pid}"
