"""Read the round-by-round bars of Clark et al. 2005, Figures 9 (SPECweb99) and 11 (Quake 3), from the
paper's PDF, whose figures are vector drawings: every bar is a filled rectangle, so its edges give the
round's start and end (x axis, seconds since the migration started) and its height the rate (y axis,
the figure's "Transfer Rate (Mbit/sec)"). Blue-grey bars are "VM memory transfered", yellow bars
"Memory dirtied during this iteration"; the last, red-outlined bar is the stop-and-copy.

Run: ``python figure_bars.py PAPER.pdf`` (needs poppler-utils' pdftocairo and pdftotext). The PDF is
not in this repository (SOURCES.md (c) says where it was read); the output, figure_bars.json, is.

The axes are calibrated from the figures' own tick labels (pdftotext -bbox): y by a least-squares line
through the labels' centres, x the same through the labels after the axis break (both figures break
the time axis after 0; the first bar starts at 0, the time migration starts). Each round's area
(rate x duration / 8) is compared with the megabytes the figure prints beside the bar; ``unit`` is the
ratio of the summed areas of the live rounds to the summed labels (1.0 when the figure's Mbit and MB
share a base; 1.048576 when Mbit is decimal and MB binary).
"""
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

BLUE = "68.998718%,77.2995%,80.39856%"    # VM memory transfered
DARK = "58.399963%,67.799377%,70.999146%"  # the same where a taller yellow bar overlaps it
YELLOW = ("93.699646%,97.999573%,50.19989%", "94.499207%,98.399353%,50.19989%")
RED = "98.799133%,3.898621%,8.599854%"

# page, the figure's band on the page (pt from the top), the labels the figure prints beside its bars
# (MB, in round order: read off the figure, their order along the bars checked by the areas below)
FIGURES = {
    "specweb": dict(page=11, band=(285.0, 472.0), x_break=50.0,
                    labels=[676.8, 126.7, 39.0, 28.4, 24.2, 16.7, 14.2, 15.3, 18.2]),
    "quake3": dict(page=12, band=(258.0, 446.0), x_break=4.5,
                   labels=[56.3, 20.4, 4.6, 1.6, 1.2, 0.9, 1.2, 1.1, 0.8, 0.2, 0.1]),
}
PATH = re.compile(r'<path style="([^"]*)" d="([^"]*)"(?: transform="matrix\(([^)]*)\)")?/>')
WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')


def rects(svg, band):
    """Filled rectangles in the band: (x0, x1, y0, y1, fill) in page points, y down."""
    out = []
    for style, d, tr in PATH.findall(svg):
        fill = re.search(r"fill:rgb\(([^)]*)\)", style)
        if not fill or d.count("L") not in (3, 5):  # rectangles (5: drawn as a closed polygon)
            continue
        nums = [float(v) for v in re.findall(r"-?\d+\.?\d*", d)]
        a, b, c, dd, e, f = [float(v) for v in tr.split(",")] if tr else (1, 0, 0, 1, 0, 0)
        xs = [a * x + c * y + e for x, y in zip(nums[0::2], nums[1::2])]
        ys = [b * x + dd * y + f for x, y in zip(nums[0::2], nums[1::2])]
        if band[0] <= min(ys) and max(ys) <= band[1]:
            out.append((min(xs), max(xs), min(ys), max(ys), fill.group(1)))
    return out


def line(points):
    """Least-squares (slope, intercept) of value on position."""
    n = len(points)
    mx = sum(p for p, _ in points) / n
    mv = sum(v for _, v in points) / n
    slope = sum((p - mx) * (v - mv) for p, v in points) / sum((p - mx) ** 2 for p, _ in points)
    return slope, mv - slope * mx


def read_figure(pdf, name, spec, tmp):
    page, band = spec["page"], spec["band"]
    svg_path, box_path = Path(tmp) / f"p{page}.svg", Path(tmp) / f"p{page}.html"
    subprocess.run(["pdftocairo", "-svg", "-f", str(page), "-l", str(page), pdf, str(svg_path)], check=True)
    subprocess.run(["pdftotext", "-bbox", "-f", str(page), "-l", str(page), pdf, str(box_path)], check=True)
    words = [(float(x0), float(y0), float(x1), float(y1), w) for x0, y0, x1, y1, w in WORD.findall(box_path.read_text())]
    bars = rects(svg_path.read_text(), band)
    base = max(r[3] for r in bars if r[4] == BLUE)
    bars = [r for r in bars if abs(r[3] - base) < 0.5]  # the bars stand on the axis (not the legend's boxes)
    left = min(r[0] for r in bars if r[4] == BLUE)
    num = re.compile(r"\d+(\.\d+)?")
    # y tick labels: numbers right of nothing, left of the plot, inside the band
    yl = [((y0 + y1) / 2, float(w)) for x0, y0, x1, y1, w in words
          if x1 < left and band[0] <= y0 <= band[1] and num.fullmatch(w)]
    # x tick labels: the row just under the bars' base
    xl = [((x0 + x1) / 2, float(w)) for x0, y0, x1, y1, w in words
          if base + 2 < y0 < base + 10 and num.fullmatch(w) and float(w) >= spec["x_break"]]
    ys, yi = line(yl)
    xs, xi = line(xl)
    rate = lambda y: ys * y + yi            # noqa: E731  (Mbit/sec as the figure's axis reads)
    time = lambda x: xs * x + xi if x > left + 1 else 0.0  # noqa: E731  (first bar starts at 0)
    spans = sorted({(round(r[0], 1), round(r[1], 1)) for r in bars if r[4] in (BLUE, DARK, RED) or r[4] in YELLOW})
    rounds = []
    for x0, x1 in spans:
        here = [r for r in bars if abs(r[0] - x0) < 0.2 and abs(r[1] - x1) < 0.2]
        sent = [r for r in here if r[4] in (BLUE, DARK)]
        dirt = [r for r in here if r[4] in YELLOW]
        red = [r for r in here if r[4] == RED]
        top = min(r[2] for r in (sent or red))
        t0, t1 = time(x0), time(x1)
        rounds.append({"t0_s": round(t0, 4), "t1_s": round(t1, 4), "duration_s": round(t1 - t0, 4),
                       "sent_rate": round(rate(top), 1),
                       "dirty_rate": round(rate(min(r[2] for r in dirt)), 1) if dirt else None,
                       "stop_and_copy": not dirt})
    if len(rounds) != len(spec["labels"]):
        raise SystemExit(f"{name}: {len(rounds)} bars, {len(spec['labels'])} labels")
    for r, mb in zip(rounds, spec["labels"]):
        r["label_MB"] = mb
        r["sent_area"] = round(r["sent_rate"] * r["duration_s"] / 8, 3)
        if r["dirty_rate"] is not None:
            r["dirty_area"] = round(r["dirty_rate"] * r["duration_s"] / 8, 3)
    live = [r for r in rounds if not r["stop_and_copy"]]
    unit = sum(r["sent_area"] for r in live) / sum(r["label_MB"] for r in live)
    for r in rounds:
        if "dirty_area" in r:
            r["dirtied_MB"] = round(r["dirty_area"] / unit, 3)
    return {"page": page, "y_axis_fit": [ys, yi], "x_axis_fit": [xs, xi], "y_ticks": yl, "x_ticks": xl,
            "unit": round(unit, 4), "rounds": rounds}


def main(pdf):
    with tempfile.TemporaryDirectory() as tmp:
        data = {name: read_figure(pdf, name, spec, tmp) for name, spec in FIGURES.items()}
    (HERE / "figure_bars.json").write_text(json.dumps(data, indent=1) + "\n")
    for name, fig in data.items():
        print(name, "unit", fig["unit"])
        for r in fig["rounds"]:
            print("  ", r)


if __name__ == "__main__":
    main(sys.argv[1])
