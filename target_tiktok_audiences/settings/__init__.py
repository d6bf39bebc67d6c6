"""The target's settings: their schema, where they come from, and what they mean for a run.

- `schema`: every setting's name, type, choices and default (for `--about` and Meltano).
- `names`: strict names, unknown ones refused with the closest known one.
- `env`: config files and `TARGET_TIKTOK_AUDIENCES_*` variables; secrets registered.
- `run`: `RunSettings`, the run's own settings, frozen.
- `definitions`: `Definitions`, the audiences and how each stream is read, frozen.
- `resolve`: the checks every resolution of specs shares.
- `simple`: `AudienceSettings`, one stream's settings in the simple form, for today's sink.
"""

from target_tiktok_audiences.settings.definitions import (
    AudienceDefinition,
    Definitions,
    Lookalike,
    SourceDefinition,
    resolve_definitions,
)
from target_tiktok_audiences.settings.env import (
    ENV_PREFIX,
    check_env_values,
    coerce_env_settings,
    nest_meltano_object,
    prepare_config,
    read_config_files,
    store_passwords,
)
from target_tiktok_audiences.settings.names import (
    SDK_INERT_SETTINGS,
    check_setting_names,
    redact_config_error,
)
from target_tiktok_audiences.settings.resolve import (
    duplicate_audience_error,
    normalization_options,
)
from target_tiktok_audiences.settings.run import RunSettings
from target_tiktok_audiences.settings.schema import config_schema, setting_default
from target_tiktok_audiences.settings.simple import AudienceSettings, simple_settings

__all__ = [
    "ENV_PREFIX",
    "SDK_INERT_SETTINGS",
    "AudienceDefinition",
    "AudienceSettings",
    "Definitions",
    "Lookalike",
    "RunSettings",
    "SourceDefinition",
    "check_env_values",
    "check_setting_names",
    "coerce_env_settings",
    "config_schema",
    "duplicate_audience_error",
    "nest_meltano_object",
    "normalization_options",
    "prepare_config",
    "read_config_files",
    "redact_config_error",
    "resolve_definitions",
    "setting_default",
    "simple_settings",
    "store_passwords",
]
