"""The typed configuration: loading, defaults, every class of bad input, overrides, round trip."""
import copy
import pickle

import pytest
import yaml

from pagesync_model.config import (
    SCHEMA, Config, ConfigError, Field, Schema, config_from_dict, load_config, memory_regions,
    schema_markdown,
)
from pagesync_model.schema import CHOICE, DURATION, FREQUENCY, INT, SIZE

MINIMAL = {
    "memory": {"size": "64GiB"},
    "cpus": {"count": 8},
    "workload": {"rate": "50k/s", "working_set": "8GiB"},
    "link": {"bandwidth": "10Gbit/s"},
}


def make(overrides=(), **sections):
    """MINIMAL with some sections' keys replaced (``memory={'size': '1GiB'}``), then validated."""
    data = copy.deepcopy(MINIMAL)
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values      # a top-level field such as policy
    return config_from_dict(data, overrides)


def error_of(fn, *args, **kwargs):
    with pytest.raises(ConfigError) as err:
        fn(*args, **kwargs)
    return err.value


def bad(**sections):
    return error_of(make, **sections)


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- good input --------------------------------------------------------------------------------

def test_minimal_config_typed_values_and_defaults():
    cfg = make()
    assert cfg.policy == "stratus"
    assert cfg.memory.size == 68719476736 and type(cfg.memory.size) is int
    assert cfg.memory.page_size == 4096
    assert cfg.memory.kernel_size == 256 * 2**20
    assert cfg.memory.zero_fraction == 0.0
    assert cfg.memory.layout == "scattered"
    assert cfg.memory.processes == 64
    assert cfg.cpus.count == 8
    assert cfg.cpus.clock == 3e9
    assert cfg.cpus.tlb_entries == 1536
    assert cfg.cpus.tlb_walk == pytest.approx(10e-9, rel=1e-12)        # 30 cycles at 3 GHz
    assert cfg.cpus.dirty_update == pytest.approx(100 / 3e9, rel=1e-12)
    assert cfg.workload.kind == "uniform"
    assert cfg.workload.rate == 50000.0
    assert cfg.workload.working_set == 8 * 2**30
    assert (cfg.workload.hot_fraction, cfg.workload.hot_share, cfg.workload.stride) == (0.1, 0.9, 1)
    assert cfg.tracking.rendezvous == pytest.approx(5e-6)
    assert cfg.tracking.pte_scan == pytest.approx(2 / 3e9, rel=1e-12)
    assert cfg.tracking.pte_harvest == pytest.approx(50e-9, rel=1e-12)
    assert cfg.tracking.tlb_flush == pytest.approx(2e-6)
    assert cfg.link.bandwidth == 1.25e9
    assert cfg.link.latency == pytest.approx(2e-6) and cfg.link.per_copy == pytest.approx(5e-6)
    assert (cfg.stratus.passes, cfg.stratus.threshold, cfg.stratus.max_copyrange,
            cfg.stratus.nearby) == (4, 1000, 100, 6)
    assert cfg.stratus.cutover == pytest.approx(1e-3)
    assert cfg.sim.quantum == pytest.approx(1e-3)
    assert (cfg.sim.seed, cfg.sim.time_limit, cfg.sim.variant) == (1, 3600.0, "correct")
    assert cfg.source == "<dict>"


def test_cycles_resolved_with_the_configured_clock():
    cfg = make(cpus={"clock": "2GHz", "dirty_update": "100cycles", "tlb_walk": "7ns"})
    assert cfg.cpus.dirty_update == pytest.approx(50e-9, rel=1e-12)
    assert cfg.cpus.tlb_walk == pytest.approx(7e-9, rel=1e-12)


def test_every_field_has_a_doc_and_every_default_is_valid():
    for path, field in SCHEMA.fields():
        assert field.doc and "\n" not in field.doc, path
    paths = dict(SCHEMA.fields())
    for section, names in {"memory": "size page_size kernel_size zero_fraction layout block processes",
                           "cpus": "count clock tlb_entries tlb_walk dirty_update",
                           "workload": "kind rate working_set hot_fraction hot_share stride",
                           "tracking": "rendezvous pte_scan pte_harvest tlb_flush",
                           "link": "bandwidth latency per_copy",
                           "stratus": "passes threshold max_copyrange nearby cutover",
                           "sim": "quantum seed time_limit variant"}.items():
        for name in names.split():
            assert f"{section}.{name}" in paths


def test_load_config_from_file(tmp_path):
    path = write(tmp_path, yaml.safe_dump(MINIMAL))
    cfg = load_config(path)
    assert cfg == make()
    assert cfg.source == str(path)


def test_empty_section_is_all_defaults():
    cfg = config_from_dict({**MINIMAL, "stratus": None})
    assert cfg.stratus.passes == 4


def test_config_is_immutable_and_reports_unknown_attributes():
    cfg = make()
    with pytest.raises(AttributeError, match="read-only"):
        cfg.memory.size = 1
    with pytest.raises(AttributeError, match="read-only"):
        cfg.policy = "xen"
    with pytest.raises(AttributeError, match=r"memory\.sise.*did you mean 'size'"):
        cfg.memory.sise


def test_flat_get_hash_and_pickle():
    cfg = make()
    flat = cfg.flat()
    assert flat["memory.size"] == 68719476736 and flat["link.bandwidth"] == 1.25e9
    assert list(flat) == [path for path, _ in SCHEMA.fields()]
    assert cfg.get("link.bandwidth") == 1.25e9
    with pytest.raises(KeyError):
        cfg.get("link.nothing")
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert hash(make()) == hash(cfg)
    assert make(stratus={"passes": 3}) != cfg


# -- to_dict round trip ------------------------------------------------------------------------

def test_to_dict_keeps_user_strings_and_fills_defaults():
    d = make(["cpus.clock=2GHz"]).to_dict()
    assert d["memory"]["size"] == "64GiB"
    assert d["memory"]["page_size"] == "4KiB"
    assert d["cpus"]["clock"] == "2GHz"
    assert d["cpus"]["tlb_walk"] == "30cycles"
    assert d["link"]["bandwidth"] == "10Gbit/s"
    assert {"policy", "memory", "cpus", "workload", "tracking", "link", "stratus", "sim"} <= set(d)
    assert set(d) == {path.split(".")[0] for path, _ in SCHEMA.fields()}  # every section, defaults filled


def test_to_dict_round_trips_through_yaml(tmp_path):
    cfg = make(["stratus.passes=7", "link.bandwidth=1GB/s", "memory.zero_fraction=0.25",
                "workload.kind=hotcold"])
    path = write(tmp_path, yaml.safe_dump(cfg.to_dict()))
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


# -- bad files and YAML ------------------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "x.yaml"
    err = error_of(load_config, missing)
    assert str(err) == f"cannot open '{missing}': No such file or directory"


def test_directory_instead_of_file(tmp_path):
    err = error_of(load_config, tmp_path)
    assert f"cannot open '{tmp_path}'" in str(err)


def test_malformed_yaml_gives_line_and_column(tmp_path):
    path = write(tmp_path, "memory:\n  size: 64GiB\n  page_size: 4KiB: x\n")
    err = error_of(load_config, path)
    assert str(err).startswith("could not parse YAML at line 3, column ")
    assert err.path == "" and err.source == str(path)
    assert "mapping values are not allowed here" in str(err)


def test_duplicate_key_is_refused(tmp_path):
    path = write(tmp_path, "memory:\n  size: 64GiB\n  size: 32GiB\n")
    err = error_of(load_config, path)
    assert "could not parse YAML at line 3" in str(err) and "duplicate key 'size'" in str(err)


@pytest.mark.parametrize("text, got", [("- memory\n- cpus\n", "a list"), ("64GiB\n", "'64GiB'")])
def test_top_level_must_be_a_mapping(tmp_path, text, got):
    path = write(tmp_path, text)
    err = error_of(load_config, path)
    assert str(err) == f"the top level must be a mapping of sections such as 'memory:', got {got}"
    assert err.source == str(path)


def test_empty_file_reports_the_first_required_value(tmp_path):
    err = error_of(load_config, write(tmp_path, ""))
    assert str(err) == "memory.size: required value is missing"
    assert err.path == "memory.size"


def test_top_level_list_from_dict():
    err = error_of(config_from_dict, [1, 2])
    assert str(err).startswith("the top level must be a mapping") and err.source == "<dict>"


# -- bad keys and values -----------------------------------------------------------------------

def test_unknown_top_level_key_suggests():
    err = error_of(config_from_dict, {**MINIMAL, "memroy": {"size": "1GiB"}})
    assert str(err) == "memroy: unknown key (did you mean 'memory'?)"


def test_unknown_nested_key_suggests():
    err = error_of(config_from_dict, {**MINIMAL, "link": {"bandwith": "10Gbit/s"}})
    assert str(err) == "link.bandwith: unknown key (did you mean 'bandwidth'?)"
    assert err.path == "link.bandwith"


def test_unknown_key_without_a_close_match_lists_the_keys():
    err = bad(link={"colour": "blue"})
    keys = ", ".join(SCHEMA.lookup("link").members)
    assert "bandwidth, latency, per_copy" in keys
    assert str(err) == f"link.colour: unknown key (expected one of: {keys})"


def test_section_must_be_a_mapping():
    err = error_of(config_from_dict, {**MINIMAL, "link": "10Gbit/s"})
    assert str(err).startswith("link: expected a mapping of " + ", ".join(SCHEMA.lookup("link").members))


def test_missing_required_value():
    data = copy.deepcopy(MINIMAL)
    del data["workload"]["rate"]
    err = error_of(config_from_dict, data)
    assert str(err) == ("workload.rate: required value is missing (page writes per second per CPU; or give "
                        "workload.dirty_rate, the whole guest's)")


def test_null_required_and_null_defaulted():
    assert str(bad(workload={"rate": None})).startswith("workload.rate: required value is missing")
    err = bad(memory={"page_size": None})
    assert str(err).startswith("memory.page_size: has no value") and "'4KiB'" in str(err)


def test_value_without_unit():
    err = bad(memory={"size": 64})
    assert str(err) == "memory.size: cannot read '64' as a size: needs a unit such as GiB"


@pytest.mark.parametrize("section, key, value, prefix", [
    ("link", "bandwidth", "25 gigs", "link.bandwidth: cannot read '25 gigs' as a bandwidth"),
    ("memory", "size", "64Gbit/s", "memory.size: cannot read '64Gbit/s' as a size"),
    ("link", "latency", "2MB", "link.latency: cannot read '2MB' as a duration"),
    ("cpus", "clock", "3GiB", "cpus.clock: cannot read '3GiB' as a frequency"),
    ("workload", "rate", "50k", "workload.rate: cannot read '50k' as a rate"),
    ("cpus", "count", "eight", "cpus.count: cannot read 'eight' as a whole number"),
    ("cpus", "count", 2.5, "cpus.count: cannot read '2.5' as a whole number"),
    ("cpus", "count", True, "cpus.count: cannot read 'True' as a whole number"),
    ("memory", "zero_fraction", "lots", "memory.zero_fraction: cannot read 'lots' as a fraction"),
])
def test_wrong_unit_or_type(section, key, value, prefix):
    assert str(bad(**{section: {key: value}})).startswith(prefix)


@pytest.mark.parametrize("section, key, value, message", [
    ("memory", "size", "0GiB", "memory.size: must be > 0, got '0GiB'"),
    ("memory", "size", "-1GiB", "memory.size: must be > 0, got '-1GiB'"),
    ("workload", "rate", "0/s", "workload.rate: must be > 0, got '0/s'"),
    ("workload", "rate", "-5k/s", "workload.rate: must be > 0, got '-5k/s'"),
    ("workload", "working_set", "0B", "workload.working_set: must be > 0, got '0B'"),
    ("link", "bandwidth", "0Gbit/s", "link.bandwidth: must be > 0, got '0Gbit/s'"),
    ("link", "latency", "-1us", "link.latency: must be >= 0, got '-1us'"),
    ("cpus", "count", 0, "cpus.count: must be >= 1, got '0'"),
    ("cpus", "clock", "0GHz", "cpus.clock: must be >= 1MHz, got '0GHz'"),
    ("cpus", "tlb_walk", "-3cycles", "cpus.tlb_walk: must be >= 0, got '-3cycles'"),
    ("stratus", "max_copyrange", 1, "stratus.max_copyrange: must be >= 2, got '1'"),
    ("stratus", "passes", -1, "stratus.passes: must be >= 0, got '-1'"),
    ("memory", "zero_fraction", 1.0, "memory.zero_fraction: must be < 1, got '1.0'"),
    ("workload", "hot_fraction", 0, "workload.hot_fraction: must be > 0, got '0'"),
    ("workload", "hot_share", 1.5, "workload.hot_share: must be <= 1, got '1.5'"),
    ("sim", "quantum", "0ms", "sim.quantum: must be > 0, got '0ms'"),
    ("memory", "page_size", "2KiB", "memory.page_size: must be a power of two of at least 4KiB, got '2KiB'"),
    ("memory", "page_size", "12KiB", "memory.page_size: must be a power of two of at least 4KiB, got '12KiB'"),
])
def test_bounds(section, key, value, message):
    assert str(bad(**{section: {key: value}})) == message


def test_fractions_accept_percent_and_edges():
    cfg = make(memory={"zero_fraction": "10%"}, workload={"hot_share": 1, "hot_fraction": "0.5"})
    assert cfg.memory.zero_fraction == pytest.approx(0.1)
    assert cfg.workload.hot_share == 1.0 and cfg.workload.hot_fraction == 0.5


def test_unknown_choice_lists_the_choices():
    err = bad(sim={"variant": "buggy"})
    assert str(err) == ("sim.variant: unknown choice 'buggy' "
                        "(expected one of: correct, copy-before-clear, no-tlb-flush)")
    err = bad(workload={"kind": "hotcld"})
    assert str(err) == ("workload.kind: unknown choice 'hotcld' "
                        "(did you mean 'hotcold'? expected one of: uniform, hotcold, sequential, zipf, trace)")
    assert str(bad(policy="xen")).startswith("policy: unknown choice 'xen'")
    assert str(bad(memory={"layout": 1})).startswith("memory.layout: unknown choice '1'")


def test_a_choice_that_reads_as_a_number_is_taken_as_written():
    # YAML reads `rules: 1.6` as the float 1.6; the choice is the string "1.6": the same config either way,
    # from a file and from --set, while a number that is no choice is still refused
    assert make(policy="qemu", qemu={"rules": 1.6}).qemu.rules == "1.6"
    written = make(policy="qemu", qemu={"rules": 1.6}).to_dict()    # as given, and read back the same
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(written))).qemu.rules == "1.6"
    assert str(bad(policy="qemu", qemu={"rules": 1.7})).startswith("qemu.rules: unknown choice '1.7'")
    assert str(bad(policy="qemu", qemu={"rules": True})).startswith("qemu.rules: unknown choice")


@pytest.mark.parametrize("section, key, value", [
    ("link", "bandwidth", "1e400Gbit/s"), ("cpus", "clock", "1e400GHz"), ("workload", "rate", "1e400/s"),
    ("sim", "quantum", "1e400s"), ("memory", "size", "1" + "0" * 5000 + "GiB"),
])
def test_absurd_numbers_are_config_errors(section, key, value):
    assert bad(**{section: {key: value}}).path == f"{section}.{key}"


def test_every_field_reports_its_own_path():
    for path, _ in SCHEMA.fields():
        section, _, key = path.rpartition(".")
        junk = ["not", "a", "value"]
        err = bad(**({section: {key: junk}} if section else {key: junk}))
        assert err.path == path and str(err).startswith(f"{path}: "), str(err)
        assert "['not', 'a', 'value']" in str(err)


# -- cross-field checks ------------------------------------------------------------------------

def test_working_set_larger_than_user_memory():
    err = bad(workload={"working_set": "80GiB"})
    assert str(err).startswith("workload.working_set: 80GiB is larger than the 63.6GiB of user memory")
    assert err.path == "workload.working_set"


def test_working_set_smaller_than_a_page():
    err = bad(workload={"working_set": "1KiB"})
    assert str(err) == "workload.working_set: 1KiB is smaller than one 4KiB page"


def test_working_set_may_fill_user_memory_exactly():
    regions = memory_regions(1 << 30, 4096, 256 << 20)
    contiguous = {"size": "1GiB", "layout": "contiguous"}
    cfg = make(memory=contiguous, workload={"working_set": f"{regions.user_bytes}B"})
    assert cfg.workload.working_set == regions.user_bytes
    assert "larger than" in str(bad(memory=contiguous, workload={"working_set": f"{regions.user_bytes + 4096}B"}))


def test_scattered_working_set_must_fit_the_whole_blocks_and_then_runs():
    # 64MiB less an 8MiB kernel leaves 14299 user pages (55.86MiB, hand: memory_regions); the scattered
    # layout places whole 2MiB blocks: 27 of them, 55296 pages' worth of 4KiB = 54MiB
    regions = memory_regions(64 << 20, 4096, 8 << 20)
    assert regions.user_bytes // 4096 == 14299 and 14299 // 512 == 27
    mem = {"size": "64MiB", "kernel_size": "8MiB"}
    err = bad(memory=mem, cpus={"count": 1}, workload={"working_set": "55MiB"})
    assert err.path == "workload.working_set"
    assert "more than the 54MiB of the 55.9MiB of user memory that lie in whole 2MiB blocks" in str(err)
    cfg = make(memory=mem, cpus={"count": 1}, workload={"working_set": "54MiB"}, sim={"time_limit": "0.05s"})
    from pagesync_model.sim.engine import simulate
    assert simulate(cfg, seed=1).summary["pages_sent"] > 0   # the Memory accepts what the check lets through
    # the contiguous layout has no blocks: all of user memory holds pages
    make(memory=dict(mem, layout="contiguous"), cpus={"count": 1}, workload={"working_set": "55MiB"})


def test_zero_pages_must_fit_beside_the_working_set():
    err = bad(memory={"zero_fraction": 0.9}, workload={"working_set": "8GiB"})
    assert err.path == "memory.zero_fraction"
    assert "0.9 of 64GiB is 57.6GiB of zero pages" in str(err) and "8GiB working set" in str(err)


def test_memory_not_a_whole_number_of_pages_rounds_up_with_a_notice():
    # 10000MB = 10^10 bytes = 2441406.25 pages of 4096 bytes: rounded up to 2441407 pages
    notices = []
    tree = copy.deepcopy(MINIMAL)
    tree["memory"] = dict(tree["memory"], size="10000MB")
    cfg = config_from_dict(tree, notices=notices)
    assert cfg.memory.size == 2441407 * 4096
    assert notices == ["memory.size: 10000MB is not a whole number of 4KiB pages; rounded up to "
                       "10000003072 bytes (2441407 pages)"]
    # a whole number of pages is left alone, without a notice
    notices.clear()
    tree["memory"]["size"] = "80GB"
    assert config_from_dict(tree, notices=notices).memory.size == 80 * 10**9 and notices == []


def test_too_many_frames():
    err = bad(memory={"size": "32TiB"})
    assert err.path == "memory.size" and "32TiB" in str(err) and "2**32 frames" in str(err)
    assert make(memory={"size": "32TiB", "page_size": "2MiB"}).memory.size == 32 * 2**40


def test_kernel_not_a_whole_number_of_pages():
    err = bad(memory={"kernel_size": "1000KB"})
    assert str(err) == "memory.kernel_size: 1000KB is not a whole number of 4KiB pages"


def test_no_user_memory_left():
    err = bad(memory={"size": "256MiB"}, workload={"working_set": "4KiB"})
    assert err.path == "memory.size"
    assert str(err).startswith("memory.size: 256MiB leaves no user memory beside the 256MiB kernel")


def test_memory_regions_match_the_memory_model():
    memory = pytest.importorskip("pagesync_model.memory")
    for size, page, kernel in [(64 << 20, 4096, 16 << 20), (1 << 30, 2 << 20, 256 << 20),
                               (300 << 20, 8192, 0), (17 << 20, 4096, 1 << 20)]:
        regions = memory_regions(size, page, kernel)
        assert regions.user_bytes == memory.Memory(size, page, kernel, 1).user_frames * page


# -- overrides ---------------------------------------------------------------------------------

def test_overrides_are_typed():
    cfg = make(["stratus.passes=6", "link.bandwidth=10Gbit/s", "cpus.clock = 2GHz",
                "sim.variant=no-tlb-flush", "memory.zero_fraction=0.5"])
    assert cfg.stratus.passes == 6 and type(cfg.stratus.passes) is int
    assert cfg.link.bandwidth == 1.25e9
    assert cfg.cpus.clock == 2e9
    assert cfg.sim.variant == "no-tlb-flush"
    assert cfg.memory.zero_fraction == 0.5


def test_override_creates_missing_section_and_leaves_input_alone():
    data = copy.deepcopy(MINIMAL)
    del data["link"]
    before = copy.deepcopy(data)
    cfg = config_from_dict(data, ["link.bandwidth=1Gbit/s"])
    assert cfg.link.bandwidth == 1.25e8
    assert data == before


def test_override_unknown_key():
    assert str(error_of(make, ["foo.bar=1"])) == "--set foo.bar=1: unknown key 'foo.bar'"
    assert error_of(make, ["foo.bar=1"]).source == "<dict>"
    err = error_of(make, ["link.bandwith=1Gbit/s"])
    assert str(err) == "--set link.bandwith=1Gbit/s: unknown key 'link.bandwith' (did you mean 'link.bandwidth'?)"


def test_override_malformed():
    err = error_of(make, ["stratus.passes"])
    assert str(err).startswith("--set stratus.passes: expected key=value")
    err = error_of(make, ["link=1"])
    assert str(err).startswith("--set link=1: 'link' is a section")
    err = error_of(make, ["sim.seed=[1,"])
    assert str(err).startswith("--set sim.seed=[1,: could not parse the value as YAML")


def test_override_bad_value_names_the_field():
    assert str(error_of(make, ["link.bandwidth=25 gigs"])).startswith(
        "link.bandwidth: cannot read '25 gigs' as a bandwidth")
    assert str(error_of(make, ["stratus.passes=-1"])) == "stratus.passes: must be >= 0, got '-1'"


def test_load_config_with_overrides(tmp_path):
    path = write(tmp_path, yaml.safe_dump(MINIMAL))
    assert load_config(path, ["stratus.threshold=50"]).stratus.threshold == 50
    assert load_config(path, "stratus.threshold=50").stratus.threshold == 50


# -- schema machinery and docs ---------------------------------------------------------------

def test_markdown_table_lists_every_field():
    table = schema_markdown()
    lines = table.splitlines()
    assert lines[0] == "| path | kind | default | description |"
    for path, field in SCHEMA.fields():
        row = [line for line in lines if line.startswith(f"| `{path}` |")]
        assert len(row) == 1, path
        assert field.doc in row[0]
    assert "| `memory.size` | size in (0, 4PiB] | **required** |" in table
    assert "| `memory.zero_fraction` | fraction in [0, 1) | `0.0` |" in table
    assert "| `cpus.tlb_walk` | duration in [0, 1ms] | `30cycles` |" in table


def test_a_new_section_policy_choice_and_check_can_be_added():
    schema = Schema(cycle_clock="hw.clock")
    schema.extend("", policy=Field(CHOICE, "a", "Policy.", choices=["a"]))
    schema.section("hw", "Hardware.", clock=Field(FREQUENCY, "1GHz", "Clock.", gt=0),
                   size=Field(SIZE, "1MiB", "Size.", gt=0))
    schema.section("xen", "Xen rules.", rounds=Field(INT, 30, "Rounds.", ge=1),
                   pause=Field(DURATION, "10cycles", "Pause.", ge=0))
    schema.add_choice("policy", "xen")

    @schema.cross_check
    def _rounds_below_size(values, raw):
        if values["xen.rounds"] > values["hw.size"]:
            raise ConfigError("xen.rounds", f"{raw['xen.rounds']} rounds is silly")

    cfg = config_from_dict({"policy": "xen", "xen": {"rounds": 5}}, schema=schema)
    assert isinstance(cfg, Config)
    assert (cfg.policy, cfg.xen.rounds, cfg.xen.pause) == ("xen", 5, pytest.approx(10e-9))
    assert str(error_of(config_from_dict, {"xen": {"rounds": 2**21}}, schema=schema)) == \
        "xen.rounds: 2097152 rounds is silly"
    assert "| `xen.rounds` | int >= 1 | `30` | Rounds. |" in schema.markdown()
    with pytest.raises(ValueError, match="already declared"):
        schema.section("xen", "again")
    with pytest.raises(ValueError, match="invalid default"):
        schema.extend("xen", bad=Field(INT, 0, "Bad.", ge=1))


def test_config_error_str_and_attributes():
    err = ConfigError("link.bandwidth", "must be > 0, got '0'")
    assert str(err) == "link.bandwidth: must be > 0, got '0'"
    assert (err.path, err.message) == ("link.bandwidth", "must be > 0, got '0'")
    assert isinstance(err, ValueError)
    assert str(ConfigError("", "just a message")) == "just a message"
    assert str(bad(memory={"size": 64})) and bad(memory={"size": 64}).source == "<dict>"
