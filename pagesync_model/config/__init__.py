"""Typed configuration: the schema (`SCHEMA`), loading (`load_config`, `config_from_dict`) and the
immutable `Config` they build. The schema is assembled once (loader.py) from the machine's fields
(fields.py) and the sections the registered policies declare (policies/base.py); the primitives are
in pagesync_model/schema.py."""
from pagesync_model.config.fields import CORE, build_schema
from pagesync_model.config.loader import (
    SCHEMA, apply_override, config_from_dict, load_config, load_tree, parse_yaml, read_config_text,
)
from pagesync_model.memory import MemoryRegions, memory_regions
from pagesync_model.schema import (
    REQUIRED, Config, ConfigError, ConfigSection, Field, Kind, Schema, Section,
)
from pagesync_model.units import Cycles, UnitError

__all__ = [
    "SCHEMA", "CORE", "build_schema", "MemoryRegions", "memory_regions",
    "load_config", "load_tree", "config_from_dict", "apply_override", "parse_yaml", "read_config_text",
    "Config", "ConfigSection", "ConfigError", "Field", "Kind", "Schema", "Section", "REQUIRED",
    "Cycles", "UnitError", "schema_markdown",
]


def schema_markdown(schema: Schema = SCHEMA) -> str:
    """The configuration schema as a Markdown table (path, kind, default, description)."""
    return schema.markdown()
