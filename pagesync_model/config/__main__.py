"""Print the configuration schema as a Markdown table, or rewrite it in a file.

``python -m pagesync_model.config --update-readme docs/configuration.md`` rewrites the table between
that file's ``<!-- schema:begin -->`` and ``<!-- schema:end -->`` markers."""
import argparse
from pathlib import Path

from pagesync_model.config import schema_markdown

BEGIN, END = "<!-- schema:begin -->\n", "<!-- schema:end -->"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update-readme", metavar="PATH", help="rewrite the schema table in this file")
    args = ap.parse_args()
    table = schema_markdown()
    if not args.update_readme:
        print(table, end="")
        return
    path = Path(args.update_readme)
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + BEGIN + table + END + tail)


if __name__ == "__main__":
    main()
