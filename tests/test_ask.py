"""``pagesync-sim ask``: the planner's numbers answered end to end, against a hand-computed idle guest;
the config it writes gives the same answer; bad input is one line and exit status 2."""
import json

import pytest
import yaml

from pagesync_model.cli import main

GIB = 1 << 30


def ask(capsys, *args):
    rc = main(["ask", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_idle_guest_hand_computed(tmp_path, capsys):
    # kubevirt-default: QEMU with max-bandwidth lifted to the link, TCP efficiency 0.941, setup 5 ms,
    # 1 MiB of device state, switchover 5 ms, 30 % of memory zero pages (8-byte headers only).
    # A 4 GiB guest writing 1 page/s: one pass sends every page once, then the stop-and-copy.
    cfg_path = tmp_path / "q.yaml"
    rc, out, err = ask(capsys, "--memory", "4GiB", "--dirty-rate", "1page/s", "--link", "10Gbit/s",
                       "--preset", "kubevirt-default", "--write-config", str(cfg_path),
                       "--json", str(tmp_path / "r.json"))
    assert rc == 0 and err == ""
    d = json.loads((tmp_path / "r.json").read_text())
    pages = 4 * GIB // 4096
    zero = int(0.3 * pages)
    payload = (pages - zero) * (4096 + 8) + zero * 8 + (1 << 20)
    rate = 10e9 / 8 * 0.941
    expected = 0.005 + payload / rate + 0.005
    assert d["converged"]
    assert d["bytes_sent"] == pytest.approx(payload, rel=5e-3)
    assert d["total_time_s"] == pytest.approx(expected, rel=5e-3)
    assert d["downtime_s"] <= 0.300 + 0.005 + 0.01
    assert "answer     converges" in out and "downtime" in out
    # the written config, run on its own, gives the same answer
    rc = main([str(cfg_path), "--json", str(tmp_path / "again.json"), "--quiet"])
    assert rc == 0
    again = json.loads((tmp_path / "again.json").read_text())
    for key in ("converged", "total_time_s", "bytes_sent", "downtime_s", "passes"):
        assert again[key] == d[key], key


def test_not_converged_states_expected_downtime(tmp_path, capsys):
    rc, out, _ = ask(capsys, "--memory", "640MiB", "--dirty-rate", "90MiB/s", "--working-set", "128MiB",
                     "--link", "1Gbit/s", "--preset", "qemu-default", "--max-bandwidth", "1Gbit/s",
                     "--time-limit", "7s", "--write-config", str(tmp_path / "c.yaml"))
    assert rc == 0
    # 90 MiB/s of distinct pages against 1 Gbit/s (119 MiB/s) of pages: short of the 300 ms limit
    assert "does NOT converge" in out and "expected downtime" in out
    assert "--find-limit" in out or "needed" in out
    cfg = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert cfg["workload"]["dirty_rate"] == "90MiB/s" and cfg["qemu"]["max_bandwidth"] == "1Gbit/s"


@pytest.mark.parametrize("args, words", [
    (["--memory", "5 gigs"], "--memory"),
    (["--preset", "vmware"], "--preset: unknown preset 'vmware'"),
    (["--preset", "stratus", "--downtime-limit", "300ms"], "takes none"),
    (["--downtime-limit", "-3ms"], "--downtime-limit"),
    (["--dirty-rate", "9GiB/s"], "--dirty-rate"),
    (["--link", "10 Gigabit"], "--link"),
    (["--vcpus", "0"], "--vcpus"),
])
def test_bad_input_one_line_exit_2(args, words, capsys, tmp_path):
    base = {"--memory": "8GiB", "--dirty-rate": "100MB/s", "--link": "10Gbit/s"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    argv = [x for kv in base.items() for x in kv] + ["--write-config", str(tmp_path / "c.yaml")]
    rc, out, err = ask(capsys, *argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.parametrize("preset, key", [("qemu-default", ("qemu", "downtime_limit")),
                                         ("kubevirt-default", ("qemu", "downtime_limit")),
                                         ("nova-default", ("operator", "downtime"))])
def test_downtime_limit_lands_on_the_presets_key(preset, key):
    from pagesync_model.ask import build_parser, question_tree
    from pagesync_model.config import config_from_dict
    args = build_parser().parse_args(["--memory", "64GiB", "--dirty-rate", "1GB/s", "--link", "25Gbit/s",
                                      "--preset", preset, "--downtime-limit", "750ms"])
    cfg = config_from_dict(question_tree(args))
    assert getattr(getattr(cfg, key[0]), key[1]) == pytest.approx(0.75)
    assert cfg.memory.size == 64 * GIB and cfg.link.bandwidth == 25e9 / 8
    # the working set defaults to the preset's share of its memory: 4 GiB of 8 GiB
    assert cfg.workload.working_set == 32 * GIB
    assert cfg.workload.dirty_rate == "1GB/s"


@pytest.mark.parametrize("preset", ["ovirt-minimal-downtime", "xen-2005", "stratus"])
def test_presets_without_a_settable_limit_refuse_one(preset, capsys, tmp_path):
    rc, _, err = ask(capsys, "--memory", "8GiB", "--dirty-rate", "100MB/s", "--link", "10Gbit/s", "--preset", preset,
                     "--downtime-limit", "300ms", "--write-config", str(tmp_path / "c.yaml"))
    assert rc == 2 and "takes none" in err and err.count("\n") == 1


def test_find_limit_is_the_boundary_between_runs_that_converge_and_not():
    from pagesync_model.ask import build_parser, find_limit, question_tree
    from pagesync_model.config import config_from_dict
    from pagesync_model.sim.engine import simulate
    args = build_parser().parse_args(["--memory", "640MiB", "--dirty-rate", "90MiB/s", "--working-set", "128MiB",
                                      "--link", "1Gbit/s", "--max-bandwidth", "1Gbit/s", "--time-limit", "7s"])
    cfg = config_from_dict(question_tree(args))
    first = simulate(cfg)
    assert not first["converged"]
    limit, runs = find_limit(cfg.to_dict(), "qemu.downtime_limit", "auto", cfg.qemu.downtime_limit,
                             first["expected_downtime_s"])
    assert limit is not None and limit > cfg.qemu.downtime_limit and runs >= 3

    def converged(value):
        return simulate(config_from_dict(cfg.to_dict(), [f"qemu.downtime_limit={value!r}s"]))["converged"]

    assert converged(limit)
    assert not converged(limit / 1.06)


def test_a_question_beyond_the_machine_names_its_options_and_the_writes_it_needs(capsys, tmp_path):
    # qemu-default's pattern: 95 % of the writes on 1 % of the working set. 5 GiB/s of distinct pages
    # per 1 s window on an 8 GiB working set, solved here by bisection on the hot/cold occupancy sum
    # sum_k W_k (1 - exp(-s_k r / W_k)): the hot pages saturate, the cold ones need most of the writes.
    import math
    import re
    pages = 8 * GIB // 4096
    hot = int(0.01 * pages)
    target = 5 * GIB / 4096

    def distinct(r):
        return hot * (1 - math.exp(-0.95 * r / hot)) + (pages - hot) * (1 - math.exp(-0.05 * r / (pages - hot)))
    lo, hi = 0.0, 1e12
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if distinct(mid) < target else (lo, mid)
    rc, out, err = ask(capsys, "--memory", "16GiB", "--dirty-rate", "5GiB/s", "--working-set", "8GiB",
                       "--link", "10Gbit/s", "--write-config", str(tmp_path / "c.yaml"))
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "--dirty-rate" in err and "--time-limit" in err and "--force" in err and "workload.rate" not in err
    writes = float(re.search(r"\(([0-9.e+]+) page writes/s", err).group(1))
    assert writes == pytest.approx(lo, rel=2e-3)
    assert not (tmp_path / "c.yaml").exists()
