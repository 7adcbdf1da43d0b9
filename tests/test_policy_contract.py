"""Every registered policy through the same checks (scikit-learn's ``check_estimator`` habit): a policy
is tested the moment it is registered.

- the oracle holds: a page-level policy's partner equals the source at cut-over under the correct
  variant on a small machine; a fluid one claims no oracle;
- the same config and seed give the same result on both backends and on a second run;
- every declared summary field is present, with the type it declares;
- every variant the policy does not model is refused (VariantError, and exit status 2 at the CLI);
- the schema holds the policy's sections and checks, and ``policy:`` offers exactly the registered names;
- a page-level policy uses only the Machine's verbs: its module never names the CPUs, the link, the
  partner, the SimPy environment or the workload (read from its source).

And the registry itself refuses a policy that breaks the contract.
"""
import ast
import dataclasses
import inspect
import subprocess
import sys

import pytest

from conftest import BACKENDS, small_config
from pagesync_model.config import SCHEMA
from pagesync_model.policies import REGISTRY, VARIANTS, FluidPolicy, PagePolicy, PolicyError, VariantError
from pagesync_model.policies.base import Registry
from pagesync_model.results import FLUID_REQUIRED, Summary, SummaryError
from pagesync_model.schema import INT, Field, Section
from pagesync_model.sim.engine import simulate

POLICIES = REGISTRY.names()
# A small machine every policy converges on; the fluid models read only its single write rate.
OVER = ("workload.rate=2k/s", "sim.time_limit=5s")


def run(name, backend="numpy", variant=None, seed=None):
    return simulate(small_config(f"policy={name}", *OVER), backend=backend, variant=variant, seed=seed)


def comparable(result):
    d = result.to_dict()
    del d["simulator"], d["backend"]
    return d


@pytest.mark.parametrize("name", POLICIES)
def test_oracle_holds(name):
    d = run(name).to_dict()
    if REGISTRY.get(name).kind == "page":
        assert d["converged"] and d["downtime_s"] is not None
        assert d["lost_writes"] == 0 and d["stale_frames"] == []
        assert d["workload_writes"] > 0
    else:
        assert d["lost_writes"] is None and d["workload_writes"] is None


@pytest.mark.parametrize("name", POLICIES)
def test_deterministic_on_both_backends(name):
    results = [comparable(run(name, b)) for b in BACKENDS] + [comparable(run(name, BACKENDS[-1]))]
    assert all(r == results[0] for r in results[1:])
    assert comparable(run(name, seed=2)) != results[0] or REGISTRY.get(name).kind == "fluid"


@pytest.mark.parametrize("name", POLICIES)
def test_summary_fields_present_and_typed(name):
    res = run(name)
    s, d = res.summary, res.to_dict()
    assert isinstance(s, Summary)
    page = REGISTRY.get(name).kind == "page"
    for f in dataclasses.fields(Summary):
        if f.name in ("extra", "order"):
            continue
        if f.name in ("dirty_bit_sets", "tlb_flush_refills", "tracking_cycles") and not page:
            assert f.name not in d
            continue
        assert f.name in d, f.name
        assert d[f.name] == getattr(s, f.name)
    assert d["policy"] == name and d["passes"] == len(d["per_pass"]) >= 2
    assert isinstance(d["converged"], bool) and isinstance(d["stop_reason"], str)
    assert d["memory_pages"] * d["page_size"] == 64 << 20
    assert d["bytes_sent"] == sum(p["bytes"] for p in d["per_pass"])
    assert d["pages_sent"] == sum(p["pages_copied"] for p in d["per_pass"]) >= d["memory_pages"]  # the full copy
    assert d["total_time_s"] >= sum(p["duration_s"] for p in d["per_pass"][:-1])


@pytest.mark.parametrize("name", POLICIES)
def test_unmodelled_variants_are_refused(name, capsys, tmp_path):
    import yaml

    from pagesync_model.cli import main
    policy = REGISTRY.get(name)
    refused = [v for v in VARIANTS if v not in policy.variants]
    for v in refused:
        with pytest.raises(VariantError, match=f"does not model the variant '{v}'"):
            run(name, variant=v)
    with pytest.raises(VariantError, match="unknown variant"):
        run(name, variant="sloppy")
    if refused:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(small_config(f"policy={name}", *OVER).to_dict()))
        assert main([str(path), "--variant", refused[0], "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--variant" in err and name in err


@pytest.mark.parametrize("name", POLICIES)
def test_schema_holds_the_policy_sections_and_checks(name):
    policy = REGISTRY.get(name)
    assert SCHEMA.lookup("policy").choices == POLICIES
    for path, section in policy.sections.items():
        declared = SCHEMA.lookup(path)
        assert list(declared.members) == list(section.members)
        assert declared.doc == section.doc
    for check in policy.checks:
        assert check in SCHEMA.checks


PAGE_MODULES = sorted({inspect.getmodule(type(p)) for p in REGISTRY if p.kind == "page"}, key=lambda m: m.__name__)
MACHINE_PARTS = {"cpus", "link", "partner", "env", "workload", "recorder"}


@pytest.mark.parametrize("module", PAGE_MODULES, ids=lambda m: m.__name__)
def test_page_policies_use_only_the_machine_verbs(module):
    """The verbs are the seam: a policy that reached the CPUs or the link directly would bypass the
    flush decision, the interconnect's timing or the records."""
    tree = ast.parse(inspect.getsource(module))
    reached = sorted({f"{ast.unparse(n.value)}.{n.attr} (line {n.lineno})" for n in ast.walk(tree)
                      if isinstance(n, ast.Attribute) and n.attr in MACHINE_PARTS
                      and not ast.unparse(n.value).endswith("cfg")})  # config sections share the names
    assert not reached, reached


def test_policy_modules_do_not_import_the_config_package():
    """The config schema is built from the registry: a policy importing the config back would be the
    loop this contract removed."""
    for policy in REGISTRY:
        tree = ast.parse(inspect.getsource(inspect.getmodule(type(policy))))
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                assert "config" not in (n.module or "").split("."), (type(policy).__name__, n.module)
    # and importing the policies alone does not pull the config in
    code = "import sys, pagesync_model.policies; print('pagesync_model.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- the registry refuses what breaks the contract ---------------------------------------------------

def _page(**attrs):
    def scanner(self, machine):
        yield machine.wait(0)
    return type("P", (PagePolicy,), {"name": "p", "scanner": scanner, **attrs})


def test_registry_accepts_a_well_formed_policy_and_finds_it():
    reg = Registry()
    reg.register(_page())
    assert reg.names() == ["p"] and reg.get("p").kind == "page"
    with pytest.raises(ValueError, match="unknown policy 'q' .choose from p"):
        reg.get("q")


@pytest.mark.parametrize("attrs, message", [
    ({"scaner": lambda self, m: None}, "unknown hook.*scaner"),
    ({"variants": ("correct", "sloppy")}, "variants must"),
    ({"variants": ("no-tlb-flush",)}, "variants must start with 'correct'"),
    ({"name": ""}, "needs a name"),
    ({"sections": {"p": {"x": 1}}}, "is not a Section"),
])
def test_registry_refuses_a_broken_policy(attrs, message):
    with pytest.raises(PolicyError, match=message):
        Registry().register(_page(**attrs))


def test_registry_refuses_duplicates_missing_hooks_and_mixed_kinds():
    reg = Registry()
    reg.register(_page())
    with pytest.raises(PolicyError, match="already registered"):
        reg.register(_page())
    with pytest.raises(PolicyError, match="must define scanner"):
        Registry().register(type("N", (PagePolicy,), {"name": "n"}))
    with pytest.raises(PolicyError, match="must define compute"):
        Registry().register(type("F", (FluidPolicy,), {"name": "f"}))
    with pytest.raises(PolicyError, match="exactly one"):
        Registry().register(type("M", (PagePolicy, FluidPolicy), {"name": "m"}))
    a = Section("a", {"x": Field(INT, 1, "x")})
    b = Section("b", {"x": Field(INT, 1, "x")})
    reg = Registry()
    reg.register(_page(name="one", sections={"s": a}))
    reg.register(_page(name="two", sections={"s": a}))  # shared, as xen-legacy and xen-v2 share 'xen'
    with pytest.raises(PolicyError, match="already declared by the one policy"):
        reg.register(_page(name="three", sections={"s": b}))


def test_a_fluid_summary_without_a_declared_field_is_refused():
    fields = {k: 0 for k in FLUID_REQUIRED if k != "total_time_s"}
    with pytest.raises(SummaryError, match="lacks total_time_s"):
        Summary.fluid("m", [], fields)
