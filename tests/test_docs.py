"""The documentation can be walked: every relative link and cited repository file resolves, every
experiment has a README, tables copied from generated files equal them, and nothing committed cites a
file outside the repository."""
import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "experiments").glob("*/README.md")])
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").iterdir() if p.is_dir() and not p.name.startswith("."))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")
TOP = ("pagesync_model/", "configs/", "experiments/", "tests/", "docs/", "_ext/", ".ci/")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    text = FENCE.sub("", path.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def rel(path):
    return path.relative_to(ROOT).as_posix()


def test_there_is_something_to_check():
    names = {rel(p) for p in DOCS}
    assert {"README.md", "docs/configuration.md", "docs/model.md", "experiments/qemu_validation/README.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve(doc):
    bad = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        name, _, anchor = target.partition("#")
        where = (doc.parent / name).resolve() if name else doc
        if not where.exists() or ROOT not in (where, *where.parents):
            bad.append(f"{target}: no such file in the repository")
        elif anchor and where.is_file() and where.suffix == ".md" and anchor not in anchors(where):
            bad.append(f"{target}: no heading '#{anchor}' in {rel(where)}")
    assert not bad, f"{rel(doc)}: " + "; ".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_cited_files_exist(doc):
    """A path in backticks that names a repository file (from the root or, in an experiment's README,
    from its folder) exists; globs must match something."""
    bad = []
    for token in CODE.findall(doc.read_text()):
        token = token.rstrip(".,;:")
        if "<" in token or "{" in token or token.startswith(("-", "/", "http", "build/")):
            continue  # placeholders, options, absolute paths and build output (not committed)
        here = doc.parent.relative_to(ROOT).as_posix()
        local = doc.parent != ROOT and here != "docs" and "/" in token and re.search(r"\.\w+$|/$", token)
        if not token.startswith(TOP) and not local:
            continue
        if not any(glob.glob(str(base / token)) for base in (ROOT, doc.parent)):
            bad.append(token)
    assert not bad, f"{rel(doc)} cites files that are not in the repository: {bad}"


@pytest.mark.parametrize("folder", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_has_a_readme_saying_how_to_rerun_it(folder):
    readme = folder / "README.md"
    assert readme.is_file(), f"experiments/{folder.name} has no README.md"
    text = readme.read_text()
    assert re.search(r"^##+ .*(rerun|run\b)", text, re.M | re.I), f"{rel(readme)}: no section on how to rerun it"
    assert re.search(r"calibrat", text, re.I), f"{rel(readme)}: does not say what was calibration"


@pytest.mark.parametrize("generated, readme", [
    ("experiments/qemu_validation/compare.md", "experiments/qemu_validation/README.md"),
    ("experiments/real_traces/results.md", "experiments/real_traces/README.md"),
])
def test_readme_tables_are_the_generated_ones(generated, readme):
    text = (ROOT / readme).read_text()
    for block in (ROOT / generated).read_text().split("\n\n"):
        if block.strip():
            assert block.strip() in text, f"{readme} does not show {generated} as it is: rerun and copy it"


def _committed_text_files():
    """The repository's own text files: git's list where this is a checkout (build products such as
    the Cython-generated _ext/*.c carry the build machine's paths and are ignored), else a walk."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = None
    if out is not None:
        for name in out.decode().split("\0"):
            path = ROOT / name
            if not name or path.suffix in (".so", ".npz", ".png", ".parquet", ".pyc", ".o", ".gz") \
                    or path.name == "test_docs.py":
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary, or deleted in the work tree
        return
    skip_dirs = {".git", "build", "dist", "__pycache__", ".venv-ci", ".pytest_cache", ".hypothesis"}
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not d.endswith(".egg-info")
                   and not (d.startswith(".") and d != ".ci")]
        for name in files:
            path = Path(top) / name
            if path.suffix in (".so", ".npz", ".png", ".parquet", ".pyc", ".o", ".gz") or name in ("test_docs.py", ".git"):
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary


# built from pieces so that this file does not match itself
OUTSIDE = re.compile("|".join([r"DESIGN" + r"\.md", r"\.\./" + "shared", r"(?<![\w.~-])/" + r"work/"]))


def test_nothing_cites_a_file_outside_the_repository():
    found = [f"{rel(path)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for path, text in _committed_text_files() for m in OUTSIDE.finditer(text)]
    assert not found, "references outside the repository: " + "; ".join(found[:20])
