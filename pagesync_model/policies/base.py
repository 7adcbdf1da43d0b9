"""The policy contract: what a stop policy declares, its two kinds, and the one registry.

A policy is a class with

- ``name`` (what ``policy:`` says) and ``variants`` (those of VARIANTS it models; ``correct`` first);
- ``sections``: its config sections, ``{path: Section}``, declared next to its code; two policies
  may share one Section object (``xen-legacy`` and ``xen-v2``). ``section_before`` names the core
  section they are listed in front of (None: after every core section);
- ``checks``: cross-field checks ``fn(values, raw)`` for its sections (run on every config, as the
  field checks are);
- ``tracking_outside(cfg)``: whether the tracker's own memory (page tables, dirty bitmap, module
  stack: ``Memory.pinned_range``) lies outside what is mirrored, so the lost-write oracle leaves it
  out (a hypervisor's tracking structures, a user-space mirror of one process);

and one of two kinds:

- `PagePolicy`: ``scanner(machine)``, a SimPy process generator run on the page-level engine that
  uses only the verbs of `pagesync_model.sim.machine.Machine` and calls ``machine.finish`` at
  cut-over; ``link_options(cfg)`` gives the per-page wire format of its stream;
- `FluidPolicy`: ``compute(cfg, seed)`` returns ``(fields, per-pass records)`` for a fluid or
  closed-form model that simulates no pages: ``fields`` holds at least `results.FLUID_REQUIRED`
  (the verdict, its times, the machine's size) and the model's own fields, in the order it reports
  them; `results.Summary` checks and types them.

``@register`` puts a policy class in `REGISTRY` and checks it, as pluggy checks a plug-in's hooks: an
unknown public attribute (a misspelled hook), a missing hook, a duplicate name or an unknown
variant is an error at import, not a silently ignored policy. The config schema is built from the
registry (``pagesync_model.config``); the engine asks the registry, never a policy by name. This
module imports only the schema primitives, so nothing here can loop back into the config.
"""
from ..schema import ConfigError, Section

# Every variant the engine can run; a policy models a subset. The two broken ones reintroduce an
# ordering bug (a page read before its dirty bit is cleared) and a TLB bug (dirty bits cleared
# without invalidating the cached translations that would set them again).
VARIANTS = ["correct", "copy-before-clear", "no-tlb-flush"]


class VariantError(ValueError):
    """A variant the engine or the chosen policy does not model."""


class PolicyError(TypeError):
    """A policy class that breaks the contract (raised at registration)."""


class Policy:
    """The part of the contract both kinds share (see the module docstring)."""
    kind = ""
    name = ""
    variants = ("correct",)
    sections = {}
    section_before = None
    checks = ()

    def tracking_outside(self, cfg):
        """True when the tracker's memory (``Memory.pinned_range``) is not mirrored nor compared."""
        return False

    def check_variant(self, variant):
        """Raise VariantError unless this policy models ``variant``."""
        if variant not in VARIANTS:
            raise VariantError(f"unknown variant '{variant}' (choose from {', '.join(VARIANTS)})")
        if variant not in self.variants:
            raise VariantError(f"the {self.name} policy does not model the variant '{variant}' (it models: "
                               f"{', '.join(self.variants)})")


class PagePolicy(Policy):
    """A policy run page by page on the engine (``scanner(machine)``)."""
    kind = "page"

    def link_options(self, cfg):
        """Keyword options of the interconnect for this policy's stream: ``page_header_bytes`` and
        ``zero_page_bytes`` (none: whole pages with no headers, as a platform DMA copies them)."""
        return {}

    def scanner(self, machine):
        raise NotImplementedError

    def time_scales(self, cfg):
        """[(what, seconds)]: the periods this policy decides on (a bandwidth window, a downtime
        limit, a batch's time on the link), which ``sim.quantum: auto`` keeps several quanta
        within (sim/quantum.py). None: only the workload's and the link's bounds apply."""
        return []


class FluidPolicy(Policy):
    """A fluid or closed-form model computed directly (``compute(cfg, seed)``)."""
    kind = "fluid"

    def compute(self, cfg, seed):
        raise NotImplementedError


_HOOKS = {"page": {"name", "variants", "sections", "section_before", "checks", "kind", "tracking_outside",
                   "check_variant", "link_options", "scanner", "time_scales"},
          "fluid": {"name", "variants", "sections", "section_before", "checks", "kind", "tracking_outside",
                    "check_variant", "compute"}}
_REQUIRED = {"page": "scanner", "fluid": "compute"}


class Registry:
    """The registered policies by name, in registration order."""

    def __init__(self):
        self._policies = {}

    def register(self, cls):
        """Class decorator: check ``cls`` against the contract and register an instance of it.
        Raises PolicyError for a class that breaks the contract, a duplicate name, an unknown variant
        or hook, or a section path declared with two different Sections."""
        where = f"policy class {cls.__name__}"
        kinds = [k for k, base in (("page", PagePolicy), ("fluid", FluidPolicy)) if issubclass(cls, base)]
        if len(kinds) != 1:
            raise PolicyError(f"{where}: must derive from exactly one of PagePolicy and FluidPolicy")
        kind = kinds[0]
        if not isinstance(cls.name, str) or not cls.name:
            raise PolicyError(f"{where}: needs a name")
        if cls.name in self._policies:
            raise PolicyError(f"{where}: the name '{cls.name}' is already registered")
        unknown = [a for a in vars(cls) if not a.startswith("_") and a not in _HOOKS[kind]]
        if unknown:
            raise PolicyError(f"{where}: unknown hook(s) {', '.join(sorted(unknown))} for a {kind} policy "
                              f"(the contract: {', '.join(sorted(_HOOKS[kind]))})")
        if getattr(cls, _REQUIRED[kind]) is getattr(PagePolicy if kind == "page" else FluidPolicy, _REQUIRED[kind]):
            raise PolicyError(f"{where}: a {kind} policy must define {_REQUIRED[kind]}")
        variants = tuple(cls.variants)
        if not variants or variants[0] != "correct" or any(v not in VARIANTS for v in variants):
            raise PolicyError(f"{where}: variants must start with 'correct' and come from {', '.join(VARIANTS)}, "
                              f"got {variants}")
        for path, section in cls.sections.items():
            if not isinstance(section, Section):
                raise PolicyError(f"{where}: section '{path}' is not a Section")
            for other in self._policies.values():
                if path in other.sections and other.sections[path] is not section:
                    raise PolicyError(f"{where}: section '{path}' is already declared by the {other.name} policy")
        self._policies[cls.name] = cls()
        return cls

    def get(self, name):
        """The policy called ``name``; raises ValueError for an unknown one."""
        try:
            return self._policies[name]
        except KeyError:
            raise ValueError(f"unknown policy '{name}' (choose from {', '.join(self._policies)})") from None

    def names(self):
        return list(self._policies)

    def __iter__(self):
        return iter(self._policies.values())

    def __contains__(self, name):
        return name in self._policies

    def sections(self):
        """``[(path, Section, before)]`` of every policy's sections, each once, in registration order."""
        out, seen = [], set()
        for p in self:
            for path, section in p.sections.items():
                if path not in seen:
                    seen.add(path)
                    out.append((path, section, p.section_before))
        return out

    def checks(self):
        """Every policy's cross-field checks, each once, in registration order."""
        out = []
        for p in self:
            out.extend(c for c in p.checks if c not in out)
        return out


REGISTRY = Registry()
register = REGISTRY.register


def payload_rate(link):
    """Payload bytes/s of the config section ``link``: its bandwidth less the framing (``efficiency``),
    the rate every policy's stream carries pages at (the engine's link and the fluid models alike)."""
    return link.bandwidth * link.efficiency


def single_rate_check(policy):
    """A cross-field check refusing configs that give ``policy`` (a fluid or closed-form model reading
    only workload.rate) what it would silently ignore: per-CPU groups, phases, a replayed trace, a DMA
    writer."""
    def _single_rate(v, raw):
        if v["policy"] != policy:
            return
        why = f"the {policy} policy models one write rate (workload.rate) and would ignore it"
        if v.get("workload.groups"):
            raise ConfigError("workload.groups", why)
        if v.get("workload.phases"):
            raise ConfigError("workload.phases", why)
        if v.get("workload.kind") == "trace":
            raise ConfigError("workload.kind", f"'trace': {why}")
        if v.get("dma.rate", 0) > 0:
            raise ConfigError("dma.rate", f"{raw['dma.rate']}: {why}")
    return _single_rate
