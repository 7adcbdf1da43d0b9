"""The configuration doc's field table is the schema, and the README's quick start is what CI runs and
prints."""
import re
from pathlib import Path

from pagesync_model.config import schema_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_schema_table_is_current():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- schema:begin -->\n", 1)[1].split("<!-- schema:end -->", 1)[0]
    assert table.strip() == schema_markdown().strip(), \
        "run: python -m pagesync_model.config --update-readme docs/configuration.md"


def test_quick_start_commands_match_ci():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    blocks = re.findall(r"```\n(.*?)\n```", README.split("## Quick start", 1)[1].split("## ", 1)[0], re.S)
    assert len(blocks) == 2
    for command in blocks:
        assert command.strip() in ci


def test_sample_output_is_what_the_quick_start_prints(capsys):
    """The README's "What it prints" is the real output of its quick-start command (a golden file)."""
    from pagesync_model.cli import main
    root = Path(__file__).resolve().parents[1]
    assert main([str(root / "configs" / "stratus.yaml"), "--backend", "auto"]) == 0
    printed = capsys.readouterr().out.replace("backend numpy", "backend cython")
    block = README.split("## What it prints\n\n```\n", 1)[1].split("```", 1)[0]
    assert printed.strip() == block.strip()
