"""The run configuration: the YAML schema of a run (``schema``, validated by pydantic; unknown keys and bad values
are one-line errors) and what makes two configs the same run (``identity``: experiment reuse, imports, report
rows)."""

from dard.config.identity import NOT_IDENTITY, SEEDLESS, config_diff, config_identity, identity_hash, without_keys
from dard.config.messages import validation_message
from dard.config.options import apply_overrides, read_assignments, set_dotted
from dard.config.read import load_config, parse_config
from dard.config.schema import RunConfig, TeacherConfig, dump_config

__all__ = [
    "NOT_IDENTITY",
    "SEEDLESS",
    "RunConfig",
    "TeacherConfig",
    "apply_overrides",
    "config_diff",
    "config_identity",
    "dump_config",
    "identity_hash",
    "load_config",
    "parse_config",
    "read_assignments",
    "set_dotted",
    "validation_message",
    "without_keys",
]
