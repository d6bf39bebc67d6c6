"""Pure rules of the settings: strict names, one spec per TikTok audience, secrets, overrides."""

from __future__ import annotations

import copy
import json

import pytest
from singer_sdk import Target
from singer_sdk.helpers.capabilities import PluginCapabilities, TargetCapabilities
from singer_sdk.sql import SQLTarget

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.redaction import MASK, scrub
from target_tiktok_audiences.settings import (
    SDK_INERT_SETTINGS,
    AudienceSettings,
    check_setting_names,
    prepare_config,
    read_config_files,
    resolve_definitions,
    store_passwords,
)
from target_tiktok_audiences.target import TargetTikTokAudiences

BASE = {"advertiser_ids": ["7000000000000000001"], "access_token": "tok-1234567890"}


def full_schema() -> dict:
    schema = copy.deepcopy(TargetTikTokAudiences.config_jsonschema)
    TargetTikTokAudiences.append_builtin_config(schema)
    return schema


def refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        check_setting_names(config, full_schema())
    return str(caught.value)


# Strict names


def test_unknown_top_level_setting_names_the_closest_known_one():
    assert refusal({**BASE, "consent_feild": "ok"}) == (
        "unknown setting `consent_feild`: did you mean `consent_field`?"
    )


def test_unknown_setting_without_a_close_name_says_where_the_names_are():
    message = refusal({**BASE, "zzz": 1})
    assert message.startswith("unknown setting `zzz`: remove it")
    assert "--about" in message


def test_unknown_names_in_a_spec_and_in_identifier_fields():
    spec = {"audiences": {"contacts": {"audiance_name": "X"}}}
    assert refusal({**BASE, **spec}) == (
        "unknown setting `audiences.contacts.audiance_name`: did you mean "
        "`audiences.contacts.audience_name`?"
    )
    fields = {"audiences": {"contacts": {"identifier_fields": {"emial": "mail"}}}}
    assert refusal({**BASE, **fields}) == (
        "unknown setting `audiences.contacts.identifier_fields.emial`: did you mean "
        "`audiences.contacts.identifier_fields.email`?"
    )
    assert refusal({**BASE, "identifier_fields": {"idfa_md": "x"}}) == (
        "unknown setting `identifier_fields.idfa_md`: did you mean `identifier_fields.idfa_md5`?"
    )


def test_every_setting_of_the_schema_and_the_sdk_stream_maps_is_known():
    config = {name: None for name in full_schema()["properties"]}
    config["audiences"] = {"s": {"audience_name": "S", "max_removal_fraction": 1.0}}
    config["identifier_fields"] = {"email": "e", "idfa_md5": "m", "aaid_md5": "n"}
    for name in ("batch_size_rows", "stream_maps", "stream_map_config", "faker_config"):
        assert name in config
    assert check_setting_names(config, full_schema()) == []


class EveryCapabilityTarget(Target):
    name = "every-capability"
    capabilities = [*PluginCapabilities, *TargetCapabilities]


class EveryCapabilitySQLTarget(SQLTarget):
    name = "every-capability-sql"
    capabilities = [*PluginCapabilities, *TargetCapabilities]


def test_the_sdks_other_target_settings_are_accepted_with_one_warning_each():
    """Every built-in setting the SDK offers a target, beyond the ones that work here."""
    offered: set[str] = set()
    for sdk_target in (EveryCapabilityTarget, EveryCapabilitySQLTarget):
        sdk = {"type": "object", "properties": {}}
        sdk_target.append_builtin_config(sdk)
        offered |= set(sdk["properties"]) - set(full_schema()["properties"])
    assert {"hard_delete", "default_target_schema", "load_method"} <= offered
    assert offered <= SDK_INERT_SETTINGS
    names = sorted({*offered, "batch_wait_limit_seconds"})
    given = {**dict.fromkeys(names, True), "flattening_enabled": False}
    warnings = check_setting_names({**BASE, **given}, full_schema())
    assert len(warnings) == len(names)
    for name, warning in zip(names, warnings, strict=True):
        assert warning.startswith(f"`{name}` is a singer-sdk setting that has no effect")


@pytest.mark.parametrize("value", [True, "true", "TRUE", 1])
def test_flattening_turned_on_is_refused_naming_dotted_paths(value):
    """The target cannot flatten: asking for it is refused, not silently ignored."""
    with pytest.raises(ConfigError) as refused:
        check_setting_names({**BASE, "flattening_enabled": value}, full_schema())
    message = str(refused.value)
    assert "`flattening_enabled`" in message and "dotted path" in message
    assert "set it to false" in message
    assert len(message.splitlines()) == 1


# One spec per TikTok audience


def audiences(**specs: dict) -> dict:
    return {**BASE, "audiences": specs}


def duplicate(config: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_definitions(config)
    return str(caught.value)


def test_two_specs_with_one_audience_id_are_refused():
    message = duplicate(audiences(a={"audience_id": "55"}, b={"audience_id": "55"}))
    assert message.startswith("`audiences.a` and `audiences.b` both sync TikTok audience 55: ")
    assert "keep one spec per TikTok audience" in message


def test_two_names_equal_after_tiktoks_cut_in_one_advertiser_are_refused():
    long = "N" * 67
    message = duplicate(
        audiences(a={"audience_name": long + "-first"}, b={"audience_name": long + "-second"})
    )
    assert "`audiences.a` and `audiences.b` both sync TikTok audience 'NNN" in message
    assert "in advertiser 7000000000000000001" in message
    # A spec named after its stream counts too.
    assert "`audiences.Club` and `audiences.b`" in duplicate(
        audiences(Club={}, b={"audience_name": "Club"})
    )


def test_the_same_name_in_other_advertisers_or_other_ids_is_allowed():
    other = {"advertiser_ids": ["7000000000000000002"]}
    resolved = resolve_definitions(
        audiences(
            a={"audience_name": "Same"},
            b={"audience_name": "Same", **other},
            c={"audience_id": "1"},
            d={"audience_id": "2"},
        )
    )
    assert sorted(resolved.audiences) == ["a", "b", "c", "d"]


# Per-spec overrides


def stream_settings(config: dict, stream: str) -> AudienceSettings | None:
    """A simple audience's settings by its stream, from the target (None: not one)."""
    return TargetTikTokAudiences(config=config, validate_config=False).audience_settings(stream)


def test_a_specs_max_removal_fraction_wins_over_the_top_level():
    config = {**audiences(a={"max_removal_fraction": 1.0}, b={}), "max_removal_fraction": 0.2}
    resolved = {s: stream_settings(config, s) for s in ("a", "b")}
    assert resolved["a"] is not None and resolved["a"].max_removal_fraction == 1.0
    assert resolved["b"] is not None and resolved["b"].max_removal_fraction == 0.2
    default = stream_settings(audiences(a={}), "a")
    assert default is not None and default.max_removal_fraction == 0.5
    assert stream_settings(config, "c") is None  # not listed in `audiences`


# Secrets


def test_the_token_is_trimmed_and_remembered():
    prepared = prepare_config({**BASE, "access_token": "  tok-trim-5e1f\n"})
    assert prepared["access_token"] == "tok-trim-5e1f"
    assert scrub("header tok-trim-5e1f sent") == f"header {MASK} sent"


def test_a_token_with_a_character_no_header_can_carry_is_refused():
    for token in ("tok en-1234", "tok\nen-1234", "tok\x00en-1234", "tok\u00e9n-1234"):
        with pytest.raises(ConfigError) as caught:
            resolve_definitions({**BASE, "access_token": token})
        assert "`access_token`: the access token holds a character that cannot go in an HTTP" in (
            str(caught.value)
        )
        assert token not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "passwords"),
    [
        ("postgresql://app:pw%2Fsecret@db:5432/x", {"pw%2Fsecret", "pw/secret"}),
        ("postgresql://app@db/x?sslmode=require&password=qs%26pw", {"qs%26pw", "qs&pw"}),
        ("postgres://db/x?PASSWORD=upper-secret", {"upper-secret"}),
        ("postgresql://app@db/x", set()),
        (".tiktok-audiences/membership.sqlite", set()),
    ],
)
def test_store_passwords(url, passwords):
    assert set(store_passwords(url)) == passwords


def test_store_passwords_are_remembered():
    prepare_config({**BASE, "membership_store": "postgresql://u@h/d?password=zq-9-remembered"})
    assert "zq-9-remembered" not in scrub("psycopg said: zq-9-remembered")


def test_read_config_files_merges_in_order_and_skips_env(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"x": 1, "y": 1}))
    second.write_text(json.dumps({"y": 2}))
    assert read_config_files([str(first), "ENV", str(second)]) == {"x": 1, "y": 2}
    with pytest.raises(ConfigError, match="does not exist: pass the target's config JSON"):
        read_config_files([str(tmp_path / "missing.json")])
