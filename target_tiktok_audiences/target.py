"""The Singer target: reads the tap's stream, routes streams to audiences, and writes STATE.

STATE goes to stdout only once every change before it is confirmed by TikTok: while a snapshot
is open (records staged, not yet applied) the latest STATE is held back. It is written exactly
as the tap sent it (decimals, NaN and infinities included). A dry run confirms nothing and
writes no STATE, so an orchestrator's bookmark does not move on without a real sync.
"""

from __future__ import annotations

import copy
import gc
import os
import sys
import time
from functools import cached_property
from types import FrameType
from typing import Any, NoReturn

import click
import simplejson
from singer_sdk import Target
from singer_sdk._logging import _setup_console_logging
from singer_sdk.cli import plugin_cli
from singer_sdk.configuration._dict_config import parse_environment_config
from singer_sdk.exceptions import ConfigValidationError, RecordsWithoutSchemaException
from singer_sdk.helpers._classproperty import classproperty
from singer_sdk.helpers.capabilities import (
    TARGET_BATCH_SIZE_ROWS_CONFIG,
    PluginCapabilities,
)
from singer_sdk.plugin_base import _ConfigInput, _plugin_log_level
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.sinks import Sink

from target_tiktok_audiences.console import (
    discard_stdout,
    install_stderr_scrubber,
    stdout_is_closed,
    store_driver_errors,
)
from target_tiktok_audiences.errors import ConfigError, InputError, TargetError
from target_tiktok_audiences.reader import SafeSingerReader, record_of
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.run import AudienceRun, open_run
from target_tiktok_audiences.settings import (
    AudienceSettings,
    RunSettings,
    check_env_values,
    check_setting_names,
    coerce_env_settings,
    config_schema,
    prepare_config,
    read_config_files,
    redact_config_error,
    resolve_definitions,
    simple_settings,
)
from target_tiktok_audiences.sharing import SharingError
from target_tiktok_audiences.sinks import AudienceSink, IgnoredStreamSink, StreamContext
from target_tiktok_audiences.sync import RunContext


class RecordBeforeSchemaError(InputError, RecordsWithoutSchemaException):
    """A RECORD came for a stream whose SCHEMA has not been seen."""


class TargetTikTokAudiences(Target):
    """Keeps TikTok custom audiences in step with the people in a Singer stream."""

    name = "target-tiktok-audiences"
    config_jsonschema = config_schema
    default_sink_class = AudienceSink
    message_reader: SafeSingerReader  # the SDK makes it of message_reader_class
    message_reader_class = SafeSingerReader
    # ACTIVATE_VERSION closes a stream's snapshot (see `_process_activate_version_message`).
    # Not VALIDATE_RECORDS: a bad identifier is counted and skipped, never fatal. Not
    # FLATTENING: nested fields are read by dotted path; `flattening_enabled: true` is refused.
    capabilities = [
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.STRUCTURED_LOGGING,
        PluginCapabilities.ACTIVATE_VERSION,
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # After super(): the SDK resets max_parallelism in its own __init__. One SQLite
        # connection serves all sinks, so sinks drain one at a time; requests run in parallel.
        self.max_parallelism = 1
        self.run_settings = RunSettings.from_config(self.config)
        # Every audience spec, resolved (and every bad one refused) before any input.
        self.definitions = resolve_definitions(self.config)
        self._held_state = False
        self._told_dry_run_state = False
        # Looked up once, not per record: the SDK's `config` wraps the settings on every read.
        self._stream_maps = bool(self.config.get("stream_maps"))
        if not self._stream_maps:  # a mapped record must be parsed here, to be mapped
            self.message_reader.record_lane = self._take_record_lines

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Offer `batch_size_rows` and stream maps, not the SDK's database-loader settings.

        Not `Target.append_builtin_config`: it would offer `process_activate_version_messages`
        (an ACTIVATE_VERSION always closes a snapshot here) and the settings of database
        loaders. `batch_size_rows` shows the default the sinks really use.
        """
        spec = dict(TARGET_BATCH_SIZE_ROWS_CONFIG["properties"]["batch_size_rows"])
        spec["default"] = AudienceSink.MAX_SIZE_DEFAULT
        spec["description"] = (
            "Records read before they are staged (and, in incremental mode, sent). "
            "Not the TikTok request size: see batch_size."
        )
        config_jsonschema["properties"].setdefault("batch_size_rows", spec)
        super(Target, cls).append_builtin_config(config_jsonschema)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """Check the merged config (files, then the environment) before the SDK's schema does.

        The SDK calls this once, in `__init__`, right after merging: the one place where the
        whole config is seen before it is used. The token is trimmed and the secrets are
        remembered for scrubbing (`prepare_config`); an unknown setting name is refused, and
        each inert singer-sdk setting earns one warning.
        """
        self._config = prepare_config(self._config)
        schema = copy.deepcopy(self.config_jsonschema)
        self.append_builtin_config(schema)
        for warning in check_setting_names(self._config, schema):
            self.logger.warning(warning)
        return super()._validate_config(raise_errors=raise_errors)

    @classproperty
    def _env_var_config(cls) -> dict[str, Any]:
        """Settings from `TARGET_TIKTOK_AUDIENCES_*` variables, numbers and objects included."""
        return cls.env_settings()

    @classmethod
    def env_settings(cls) -> dict[str, Any]:
        """Settings from the environment, as the target (and the operator commands) read them."""
        schema = copy.deepcopy(cls.config_jsonschema)
        cls.append_builtin_config(schema)
        try:
            raw = parse_environment_config(schema, cls._env_var_prefix)
        except ValueError:
            check_env_values(schema, os.environ)  # names the variable the SDK could not read
            raise
        check_env_values(schema, os.environ)
        return coerce_env_settings(raw, schema)

    # Settings and shared resources

    @property
    def dry_run(self) -> bool:
        """Send nothing, change no stored membership, write planned requests to a file."""
        return self.run_settings.dry_run

    def audience_settings(self, stream: str) -> AudienceSettings | None:
        """A simple audience's settings, by its stream (None: the stream is no spec's key)."""
        definition = self.definitions.audiences.get(stream)
        if definition is None or not definition.simple:
            return None
        return simple_settings(definition, self.definitions.source(stream))

    def get_sink_class(self, stream_name: str) -> type[Sink]:
        """Streams that feed no audience and exclude from none go to a sink that drops them."""
        if not self.definitions.audiences_of(stream_name):
            self.logger.warning(
                "Stream %s is not listed in `audiences`: its records are ignored.", stream_name
            )
            return IgnoredStreamSink
        return AudienceSink

    @cached_property
    def run(self) -> RunContext:
        """What every audience's sync of this run shares, opened on first use."""
        return open_run(self.run_settings, self.logger)

    @cached_property
    def audiences(self) -> AudienceRun:
        """The run's syncs, by stream and by composed audience."""
        return AudienceRun(self.run, self.definitions, self.run_settings, self.audience_settings)

    def stream_context(self, stream: str, key_properties: tuple[str, ...]) -> StreamContext:
        """What a new sink of `stream` works with: its sync, the workers, the run's progress.

        A new SCHEMA replaced an earlier sink of the stream: the earlier sink's records are
        drained first, so they come before the new sink's.
        """
        for earlier in self._sinks_to_clear:
            if earlier.stream_name == stream and earlier.current_size:
                self.drain_one(earlier)
        return StreamContext(
            sync=self.audiences.sync_of(stream, key_properties),
            workers=self.run.workers,
            progress=self.run.progress,
            line_number=lambda: self.message_reader.line_number,
        )

    def _audience_sinks(self) -> list[AudienceSink]:
        return [s for s in self._sinks_active.values() if isinstance(s, AudienceSink)]

    # Messages

    def _process_record_message(self, message_dict: dict) -> None:
        """Hand the record straight to its sink, unless stream maps must transform it.

        The SDK's general path copies, maps, validates and time-stamps every record; none of
        that matters here, and at millions of records it costs more than the hashing.
        """
        if self._stream_maps:
            super()._process_record_message(message_dict)
            return
        stream, record = record_of(message_dict)
        sink = self._sinks_active.get(stream)
        if sink is None:
            msg = (
                f"A record for stream {stream!r} was encountered before a corresponding schema: "
                "the tap does not follow the Singer spec"
            )
            raise RecordBeforeSchemaError(msg)
        sink.process_record(record, {})
        self._after_record(sink)

    def _take_record_lines(self, stream: str, first: int, lines: bytes, count: int) -> bool:
        """Take an audience stream's RECORD lines unparsed (see `reader`); False: parse them."""
        sink = self._sinks_active.get(stream)
        if type(sink) is not AudienceSink or not sink.takes_lines(count):
            return False
        sink.process_lines(first, lines, count)
        self._after_record(sink)
        return True

    def _after_record(self, sink: Sink) -> None:
        if sink.is_full:
            self.drain_one(sink)
        # The SDK's own check, without its property and division on every record.
        if time.time() - self._last_full_drain_at > self._MAX_RECORD_AGE_IN_MINUTES * 60:
            self._handle_max_record_age()

    def _process_activate_version_message(self, message_dict: dict) -> None:
        """Drain the stream's pending records first, so the version closes over all of them."""
        self._assert_line_requires(message_dict, requires={"stream", "version"})
        stream = message_dict["stream"]
        if stream not in self.mapper.stream_maps:
            msg = f"ACTIVATE_VERSION for stream {stream!r} came before its SCHEMA message"
            raise InputError(msg)
        for stream_map in self.mapper.stream_maps[stream]:
            sink = self.get_sink(stream_map.stream_alias)
            self.drain_one(sink)
            sink.activate_version(message_dict["version"])

    def process_endofpipe(self) -> None:
        """Apply open snapshots, then let the SDK drain, write STATE and clean up.

        Every sink stages what it still holds before any snapshot applies: the store then
        indexes what is staged once, not again after each stream's last records.
        """
        end_proves = self.run_settings.end_of_input_proves_snapshot
        sinks = self._audience_sinks()
        for sink in sinks:
            self.drain_one(sink)
        for sink in sinks:
            sink.finish_input(end_proves_snapshot=end_proves)
        self.audiences.sync_composed()
        refused = self.audiences.share_and_extend()
        super().process_endofpipe()
        self.audiences.report()
        self.run.close()
        if refused:
            raise SharingError(
                "; ".join(refused)
                + ": membership is synced and the tap's STATE written; fix the audience's "
                "`share_with_advertiser_ids` or `lookalike` (or TikTok's permissions) and re-run"
            )

    def _process_state_message(self, message_dict: dict) -> None:
        """Keep the latest STATE as the JSON text it will be written as (see `_state_json`).

        Serialised once, as it is read: a value too deep to write fails here, naming its
        line, and the SDK later copies a string rather than the tap's nested value. A value
        that is empty or null is kept as it is and, as the SDK does, never written.
        """
        self._assert_line_requires(message_dict, requires={"value"})
        value = message_dict["value"]
        # The SDK types its latest STATE as a dict, but only compares it, copies it and hands
        # it to `_write_state_message`: this target keeps the text it will write.
        self._latest_state = _state_json(value) if value else value  # type: ignore[assignment]

    def _write_state_message(self, state: str) -> None:  # type: ignore[override]
        """Write STATE only when no change before it is unconfirmed, exactly as the tap sent it.

        `state` is the text `_process_state_message` made. The reader keeps numbers as
        Decimal, NaN and infinities as floats, and they are written back as read (the SDK's
        own writer turns NaN and infinities into null). A dry run writes none.
        """
        if self.dry_run:
            if not self._told_dry_run_state:
                self.logger.info(
                    "Dry run: the tap's STATE is not written (nothing was confirmed), so the "
                    "next real run reads the same input again."
                )
                self._told_dry_run_state = True
            return
        if any(sink.has_unconfirmed_work for sink in self._audience_sinks()):
            if not self._held_state:
                self.logger.info("Holding STATE until the open snapshot is confirmed.")
            self._held_state = True
            return
        self._held_state = False
        sys.stdout.write(state + "\n")
        sys.stdout.flush()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """Stop at once on SIGTERM: unconfirmed work is redone by the next run, never guessed."""
        self.logger.error(
            "Terminated by signal %d: no STATE written for unconfirmed work; the next run "
            "on the same input completes the sync.",
            signum,
        )
        if "run" in self.__dict__:  # retries waiting in other threads give up at once
            self.run.client.stop()
        sys.exit(128 + signum)

    # CLI

    @plugin_cli
    def cli(cls) -> click.Command:
        """The console script: stderr is scrubbed of secrets before logging writes to it."""
        install_stderr_scrubber()
        _setup_console_logging(log_level=_plugin_log_level(plugin_name=cls.name))
        return cls.get_singer_command()

    @classmethod
    def cb_config(
        cls, ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
    ) -> _ConfigInput:
        """`--config` files, merged; the environment is read with or without `--config ENV`.

        A variable overrides the files (the SDK merges it last), so the target sees what
        `tiktok-audiences` sees. A missing or malformed file is one line, exit 1.
        """
        try:
            return _ConfigInput(config=read_config_files(value), parse_env=True)
        except ConfigError as exc:
            cls._fail(str(exc))

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:
        """Run the target; expected failures end with one line on stderr and exit 1."""
        if stdout_is_closed() and not kwargs.get("about"):
            cls._fail(
                "stdout is closed: the target writes the tap's STATE there; redirect it to a "
                "file (> state.json) or to /dev/null"
            )
        # What is alive now (the modules and what they built) lives for the whole run: set it
        # apart from the collector, whose full passes would otherwise walk it again and again
        # while the request bodies of a large sync come and go (a tenth of the apply at 1M).
        # Here, not in __init__: only the command's own process, never a host that embeds it.
        gc.freeze()
        try:
            super().invoke(*args, **kwargs)
        except BrokenPipeError:
            discard_stdout()
            cls._fail(
                "stdout was closed by its reader: the last STATE may not have been delivered; "
                "what TikTok confirmed is in the store, so re-running the same input is safe"
            )
        except ConfigValidationError as exc:
            cls._fail(f"invalid settings: {redact_config_error(exc.errors)}")
        except (TargetError, RecordsWithoutSchemaException, InvalidInputLine) as exc:
            cls._fail(str(exc))
        except Exception as exc:
            if not isinstance(exc, store_driver_errors()):
                raise
            cls._fail(
                f"the membership store failed ({type(exc).__name__}: {mask_url(str(exc))}); "
                "nothing unconfirmed was recorded: check `membership_store` and the database, "
                "then re-run"
            )

    @classmethod
    def _fail(cls, message: str) -> NoReturn:
        cls.logger.error(message)
        sys.exit(1)


def _state_json(state: dict) -> str:
    """A STATE value as one JSON line: Decimal exact, NaN and +/-Infinity kept as the tap wrote."""
    return simplejson.dumps(state, use_decimal=True, allow_nan=True, separators=(",", ":"))


__all__ = ["ConfigError", "TargetTikTokAudiences"]
