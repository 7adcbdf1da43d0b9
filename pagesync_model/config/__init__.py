"""Typed configuration: the schema (`SCHEMA`), loading (`load_config`, `config_from_dict`) and the
immutable `Config` they build. See fields.py for every field and schema.py for the machinery."""
from pagesync_model.config.fields import (
    POLICIES, SCHEMA, MemoryRegions, memory_regions, register_policy,
)
from pagesync_model.config.loader import (
    apply_override, config_from_dict, load_config, load_tree, parse_yaml, read_config_text,
)
from pagesync_model.config.schema import (
    REQUIRED, Config, ConfigError, ConfigSection, Field, Kind, Schema, Section,
)
from pagesync_model.units import Cycles, UnitError

__all__ = [
    "SCHEMA", "POLICIES", "register_policy", "MemoryRegions", "memory_regions",
    "load_config", "load_tree", "config_from_dict", "apply_override", "parse_yaml", "read_config_text",
    "Config", "ConfigSection", "ConfigError", "Field", "Kind", "Schema", "Section", "REQUIRED",
    "Cycles", "UnitError", "schema_markdown",
]


def schema_markdown(schema: Schema = SCHEMA) -> str:
    """The configuration schema as a Markdown table (path, kind, default, description)."""
    return schema.markdown()


# Policy modules add their own sections and names to SCHEMA when imported: import them all now, so
# that every config is validated against every policy's fields.
from pagesync_model import policies as _policies  # noqa: E402,F401
