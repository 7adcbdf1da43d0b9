"""Plots: a run's passes and a sweep's heatmap and lines; files written, axes labelled, series counted
on the Figure before it is saved."""
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from conftest import small_config
from pagesync_model.cli import main
from pagesync_model.plots import PlotError, plot_run, plot_sweep, save_figure
from pagesync_model.sweep.knobs import label_for
from pagesync_model.sim.engine import simulate


@pytest.fixture(scope="module")
def result():
    return simulate(small_config())


def test_run_plot_has_pages_durations_and_time_line(result, tmp_path):
    fig = plot_run(result)
    pages, durations, timeline = fig.axes
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel()
    assert pages.get_yscale() == "log" and len(pages.get_lines()) == 2
    assert [l.get_label() for l in pages.get_lines()] == ["dirty pages found by the harvest", "pages copied"]
    n = len(result.per_pass)
    assert len(durations.patches) == n
    labels = [t.get_text() for t in timeline.get_legend().get_texts()]
    assert len(labels) == 3 and labels[0].startswith("copy passes") and labels[1].startswith("brownouts") \
        and labels[2].startswith("blackout")
    assert [t.get_text() for t in timeline.get_yticklabels()] == ["blackout", "brownouts", "passes"]
    for ext in ("png", "svg"):
        path = tmp_path / f"run.{ext}"
        save_figure(fig, str(path))
        assert path.stat().st_size > 1000
    assert (tmp_path / "run.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "run.png").read_bytes()[:4] == b"\x89PNG"


def test_unsupported_extension(result, tmp_path):
    with pytest.raises(PlotError, match="use .png or .svg"):
        save_figure(plot_run(result), str(tmp_path / "run.pdf"))


def test_cli_plot_flag(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    import yaml
    from conftest import SMALL
    cfg.write_text(yaml.safe_dump(SMALL))
    assert main([str(cfg), "--quiet", "--plot", str(tmp_path / "r.svg")]) == 0
    assert (tmp_path / "r.svg").stat().st_size > 1000
    assert main([str(cfg), "--quiet", "--plot", str(tmp_path / "r.gif")]) == 2
    assert "--plot" in capsys.readouterr().err


def table(converged):
    """A 3 x 2 sweep table with 2 seeds; ``converged(x, y)`` says which cells converged."""
    rows = []
    for i, bw in enumerate([1.25e9, 2.5e9, 1.25e10]):
        for j, size in enumerate([64 << 30, 128 << 30]):
            for seed in (1, 2):
                rows.append({"run": len(rows), "run_id": str(len(rows)), "link.bandwidth": bw, "memory.size": size,
                             "seed": seed, "downtime_s": 0.01 * (1 + j) / (1 + i) + 0.001 * seed,
                             "converged": converged(i, j), "error": None})
    return pd.DataFrame(rows)


def test_sweep_heatmap_marks_the_boundary(tmp_path):
    fig = plot_sweep(table(lambda i, j: i > 0), ["link.bandwidth", "memory.size"], "downtime_s", label=label_for)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (2, 3)
    assert ax.get_xlabel() == "link.bandwidth" and ax.get_ylabel() == "memory.size"
    assert fig.axes[1].get_ylabel() == "downtime (ms)"  # the colour bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10Gbit/s", "20Gbit/s", "100Gbit/s"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["64GiB", "128GiB"]
    boundary = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(boundary) == 1 and len(boundary[0].get_segments()) == 2  # one vertical edge per row
    assert sum("not conv" in t.get_text() for t in ax.texts) == 2
    # the cell value is the mean over seeds, in ms
    assert ax.images[0].get_array()[0, 0] == pytest.approx((0.011 + 0.012) / 2 * 1e3)
    save_figure(fig, str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_sweep_heatmap_without_a_boundary_when_all_converged():
    fig = plot_sweep(table(lambda i, j: True), ["link.bandwidth", "memory.size"], "downtime_s")
    assert not [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]


def test_sweep_lines_one_per_y_value_and_not_converged_marked(tmp_path):
    fig = plot_sweep(table(lambda i, j: i > 0), ["link.bandwidth", "memory.size"], "downtime_s", kind="lines",
                     label=label_for)
    ax = fig.axes[0]
    labels = [l.get_label() for l in ax.get_lines()]
    assert labels == ["memory.size = 64GiB", "memory.size = 128GiB", "not converged"]
    assert len(ax.get_lines()[-1].get_xdata()) == 2
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "link.bandwidth" and ax.get_ylabel() == "downtime (ms)"
    save_figure(fig, str(tmp_path / "l.svg"))


def test_sweep_line_over_one_axis_draws_the_boundary():
    df = table(lambda i, j: i > 0)
    df = df[df["memory.size"] == 64 << 30]
    fig = plot_sweep(df, ["link.bandwidth", "memory.size"], "downtime_s")
    labels = [l.get_label() for l in fig.axes[0].get_lines()]
    assert labels == ["downtime (ms)", "converged / not converged", "not converged"]


def test_sweep_plot_errors():
    df = table(lambda i, j: True)
    with pytest.raises(PlotError, match="'speed' is not a column"):
        plot_sweep(df, ["link.bandwidth", "memory.size"], "speed")
    with pytest.raises(PlotError, match="axis 'memory.size' has 2 values"):
        plot_sweep(df.assign(extra=1), ["link.bandwidth", "extra", "memory.size"], "downtime_s",
                   x="link.bandwidth", y="extra")
    with pytest.raises(PlotError, match="no rows"):
        plot_sweep(df.iloc[0:0], ["link.bandwidth"], "downtime_s")


def test_sweep_heatmap_limit_contour():
    # converged everywhere; downtime <= 8 ms only where the link is fastest
    fig = plot_sweep(table(lambda i, j: True), ["link.bandwidth", "memory.size"], "downtime_s", limit=0.008)
    coll = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    assert len(coll) == 1 and coll[0].get_label() == "downtime (ms) <= 8 (converged)"
    assert len(coll[0].get_segments()) >= 1
