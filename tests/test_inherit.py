"""Config files inherit with ``base:``: the result equals the same config written out in full, chains
work, and a bad base (missing, not a name, not YAML, a cycle) is one line naming the file, exit 2."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pagesync_model.cli import main
from pagesync_model.config import ConfigError, load_config, load_tree
from pagesync_model.sweep.spec import sweep_from_dict

ROOT = Path(__file__).resolve().parents[1]

BASE = """
memory: {size: 64MiB, kernel_size: 4MiB, processes: 8}
cpus: {count: 4, tlb_entries: 64}
workload:
  kind: hotcold
  rate: 20k/s
  working_set: 32MiB
  hot_fraction: 0.05
  phases: [{duration: 1s, kind: uniform}, {duration: 2s, kind: sequential, stride: 3}]
link: {bandwidth: 1GB/s, latency: 2us, per_copy: 1us}
stratus: {passes: 5, threshold: 64}
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_equals_the_config_written_in_full(tmp_path):
    write(tmp_path / "base.yaml", BASE)
    child = write(tmp_path / "sub" / "child.yaml", """
base: ../base.yaml          # relative to this file, not to the current directory
link: {bandwidth: 4GB/s}
workload:
  phases: [{duration: 500ms, kind: zipf}]
operator: {kind: none}
""")
    # written out by hand: link merges key by key, the phases list is replaced, not spliced
    full = write(tmp_path / "full.yaml", """
memory: {size: 64MiB, kernel_size: 4MiB, processes: 8}
cpus: {count: 4, tlb_entries: 64}
workload:
  kind: hotcold
  rate: 20k/s
  working_set: 32MiB
  hot_fraction: 0.05
  phases: [{duration: 500ms, kind: zipf}]
link: {bandwidth: 4GB/s, latency: 2us, per_copy: 1us}
stratus: {passes: 5, threshold: 64}
operator: {kind: none}
""")
    assert load_config(child).to_dict() == load_config(full).to_dict()
    assert "base" not in load_tree(child)


def test_chain_of_bases(tmp_path):
    write(tmp_path / "a.yaml", BASE)
    write(tmp_path / "b.yaml", "base: a.yaml\nstratus: {threshold: 100}\nlink: {latency: 5us}\n")
    c = write(tmp_path / "c.yaml", "base: b.yaml\nstratus: {passes: 2}\nlink: {latency: 7us}\n")
    cfg = load_config(c)
    assert (cfg.stratus.passes, cfg.stratus.threshold) == (2, 100)
    assert cfg.link.latency == pytest.approx(7e-6)
    assert cfg.link.per_copy == pytest.approx(1e-6)
    assert cfg.cpus.tlb_entries == 64
    # overrides apply on top of the whole chain
    assert load_config(c, ["stratus.threshold=7"]).stratus.threshold == 7


def run_cli(path, capsys):
    rc = main([str(path), "--quiet"])
    err = capsys.readouterr().err
    return rc, err


def test_cycle_is_refused_naming_the_chain(tmp_path, capsys):
    write(tmp_path / "a.yaml", "base: b.yaml\n" + BASE)
    write(tmp_path / "b.yaml", "base: sub/../a.yaml\n")
    rc, err = run_cli(tmp_path / "a.yaml", capsys)
    assert rc == 2 and err.count("\n") == 1
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert f"base: {b}: base: cycle: {a} -> {b} -> {a}" in err


def test_a_file_that_names_itself_is_a_cycle(tmp_path):
    a = write(tmp_path / "a.yaml", "base: ./a.yaml\n" + BASE)
    with pytest.raises(ConfigError, match="cycle"):
        load_config(a)


def test_missing_base_names_the_file(tmp_path, capsys):
    child = write(tmp_path / "child.yaml", "base: nowhere.yaml\n")
    rc, err = run_cli(child, capsys)
    assert rc == 2
    assert err == f"pagesync-sim: {child}: base: cannot open '{tmp_path / 'nowhere.yaml'}': No such file or directory\n"


def test_missing_base_deeper_in_the_chain_names_both_files(tmp_path):
    write(tmp_path / "b.yaml", "base: gone.yaml\n")
    a = write(tmp_path / "a.yaml", "base: b.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_config(a)
    assert str(info.value) == f"base: {tmp_path / 'b.yaml'}: base: cannot open '{tmp_path / 'gone.yaml'}': " \
                              "No such file or directory"


@pytest.mark.parametrize("value", ["[a.yaml]", "''", "~", "3"])
def test_base_must_be_a_file_name(tmp_path, value):
    a = write(tmp_path / "a.yaml", f"base: {value}\n" + BASE)
    with pytest.raises(ConfigError, match=r"^base: expected the name of a config file"):
        load_config(a)


def test_base_that_is_not_yaml_or_not_a_mapping(tmp_path):
    write(tmp_path / "broken.yaml", "memory: [1, 2\n")
    write(tmp_path / "list.yaml", "- 1\n- 2\n")
    a = write(tmp_path / "a.yaml", "base: broken.yaml\n")
    with pytest.raises(ConfigError, match=rf"^base: {tmp_path / 'broken.yaml'}: could not parse YAML at line 2"):
        load_config(a)
    a.write_text("base: list.yaml\n")
    with pytest.raises(ConfigError, match=rf"^base: {tmp_path / 'list.yaml'}: the top level must be a mapping"):
        load_config(a)


def test_bad_value_in_a_base_is_reported_with_its_key(tmp_path):
    write(tmp_path / "a.yaml", BASE.replace("1GB/s", "1 gigs"))
    b = write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"^link.bandwidth: cannot read '1 gigs'"):
        load_config(b)
    # the child can repair it
    b.write_text("base: a.yaml\nlink: {bandwidth: 1GB/s}\n")
    assert load_config(b).link.bandwidth > 0


def test_base_is_only_understood_in_files(tmp_path):
    from pagesync_model.config import config_from_dict
    with pytest.raises(ConfigError, match="base"):
        config_from_dict({**yaml.safe_load(BASE), "base": "a.yaml"})


def test_sweep_and_plan_over_an_inheriting_config(tmp_path):
    plain = "\n".join(line for line in BASE.splitlines() if "phases" not in line)
    write(tmp_path / "a.yaml", plain + "\npolicy: analytic\nanalytic: {rounds: 1}\n")
    write(tmp_path / "b.yaml", "base: a.yaml\nlink: {bandwidth: 2GB/s}\n")
    sw = sweep_from_dict({"base": "b.yaml", "axes": {"stratus.passes": [1, 2]}}, str(tmp_path / "s.yaml"))
    assert "base" not in sw.base and sw.base["link"] == {"bandwidth": "2GB/s", "latency": "2us", "per_copy": "1us"}
    out = subprocess.run([sys.executable, "-m", "pagesync_model", "plan", str(tmp_path / "b.yaml"),
                          "--target", "downtime<=10ms", "--vary", "link.bandwidth", "--range", "100MB/s..100GB/s"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "meets downtime <= 10ms" in out.stdout
