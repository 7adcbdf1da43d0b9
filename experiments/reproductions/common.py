"""Shared by the reproductions' run.py scripts: run a config, write results.json and results.md.

Each reproduction's rows are dicts with ``quantity`` (what is compared), ``published`` (the figure
as the publication states it), ``predicted`` (the simulator's), ``unit`` and optionally ``note``;
``ratio`` (predicted / published) is added here.
"""
import json
from pathlib import Path

from pagesync_model.config import load_config
from pagesync_model.sim.engine import simulate

HERE = Path(__file__).resolve().parent


def run_config(path, overrides=(), backend="auto"):
    """The Result's dict of the config at ``path`` (with ``overrides``, 'key=value' strings)."""
    return simulate(load_config(str(path), list(overrides)), backend=backend).to_dict()


def with_ratios(rows):
    out = []
    for row in rows:
        row = dict(row)
        pub, pred = row.get("published"), row.get("predicted")
        ok = isinstance(pub, (int, float)) and isinstance(pred, (int, float)) and pub
        row["ratio"] = round(pred / pub, 4) if ok else None
        out.append(row)
    return out


def _cell(x):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def write_results(folder, title, rows, extra=None):
    """Write ``folder``/results.json (rows with ratios, plus ``extra``) and results.md (a table)."""
    folder = Path(folder)
    rows = with_ratios(rows)
    data = {"title": title, "rows": rows, **(extra or {})}
    (folder / "results.json").write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    lines = [f"# {title}", "", "| quantity | published | predicted | unit | ratio | note |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['quantity']} | {_cell(r['published'])} | {_cell(r['predicted'])} | {r['unit']} | "
                     f"{_cell(r['ratio'])} | {r.get('note', '')} |")
    (folder / "results.md").write_text("\n".join(lines) + "\n")
    return data
