"""NEC Express5800/ft R320g/h: maximum memory-copy (resync) time with Hyper-V, predicted for every
row of NEC's table from one set of platform inputs per model line, derived from a different table.

Run: ``python experiments/reproductions/nec_resync/run.py`` (a few seconds). Writes results.json and
results.md next to this file.

Prediction (validation): the platform inputs of the M4 (resp. E4) line are the slope and intercept
of a least-squares line through the R320e-M4 (resp. R320e-E4) Hyper-V table (NEC's R320e-M4
configuration guide, 2017), a different machine generation's measurement. Nothing is taken from the
R320g/h table. Calibration (shown separately, labelled): the same line fitted to the R320g/h table
itself, which reproduces it by construction.
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[2])]  # common.py; the tree's pagesync_model
from common import run_config, write_results  # noqa: E402

# NEC support note 3150100887: memory-copy time with Hyper-V enabled, maximum (GB -> s)
PUBLISHED = {
    "M4": {16: 3, 32: 4, 64: 5, 128: 9, 256: 16, 320: 17, 512: 25, 640: 31},
    "E4": {16: 3, 32: 4, 64: 7, 128: 13, 256: 25, 320: 30},
}
# R320e-M4 configuration guide rev. 5.3 (2017) p. 21, Hyper-V "reference values of interruption during
# re-synchronization" (GB -> s): the calibration data of the prediction
R320E = {
    "M4": {8: 2, 16: 3, 32: 3, 64: 5, 128: 9, 256: 18, 512: 27},
    "E4": {8: 2, 16: 3, 32: 5, 64: 8, 128: 15, 256: 30, 512: 60},
}


def line_fit(table):
    """(slope s/GB, intercept s) of the least-squares line through {GB: s}."""
    xs, ys = list(table), list(table.values())
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def predict(model, slope, intercept):
    """{GB: simulated downtime s} for the rows of PUBLISHED[model] on a platform copying at 1/slope
    GiB/s after a fixed setup of ``intercept`` s."""
    over = [f"link.bandwidth={1 / slope!r}GiB/s", f"stratus.setup={intercept!r}s"]
    return {gb: run_config(HERE / "base.yaml", over + [f"memory.size={gb}GiB"])["downtime_s"]
            for gb in PUBLISHED[model]}


def main():
    rows, platforms, calibration = [], {}, []
    for model in PUBLISHED:
        slope, icpt = line_fit(R320E[model])
        platforms[model] = {"source": f"R320e-{model} Hyper-V table (line fit)", "bandwidth_GiBps": 1 / slope,
                            "setup_s": icpt}
        pred = predict(model, slope, icpt)
        for gb, pub in PUBLISHED[model].items():
            rows.append({"quantity": f"R320g/h-{model}, {gb} GB", "published": pub,
                         "predicted": round(pred[gb], 2), "unit": "s",
                         "note": "prediction: platform from the R320e table"})
        cslope, cicpt = line_fit(PUBLISHED[model])
        platforms[model + " (calibration)"] = {"source": f"R320g/h-{model} table itself (line fit)",
                                               "bandwidth_GiBps": 1 / cslope, "setup_s": cicpt}
        cpred = predict(model, cslope, cicpt)
        for gb, pub in PUBLISHED[model].items():
            calibration.append({"quantity": f"R320g/h-{model}, {gb} GB", "published": pub,
                                "predicted": round(cpred[gb], 2), "unit": "s",
                                "note": "CALIBRATION: fitted to this table"})
    data = write_results(HERE, "NEC R320g/h resync with Hyper-V (prediction from the R320e tables)", rows,
                         {"platforms": platforms})
    cal = write_results(HERE / "calibration", "NEC R320g/h resync: self-fit (calibration, not a reproduction)",
                        calibration, {"platforms": platforms})
    return data, cal


if __name__ == "__main__":
    (HERE / "calibration").mkdir(exist_ok=True)
    main()
