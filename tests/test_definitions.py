"""Audiences as definitions: composed specs, sources, and every refusal at start."""

from __future__ import annotations

import copy

import pytest
from singer_sdk.plugin_base import JSONSchemaValidator

from target_tiktok_audiences.errors import ConfigError
from target_tiktok_audiences.settings import (
    check_setting_names,
    resolve_definitions,
    setting_default,
)
from target_tiktok_audiences.target import TargetTikTokAudiences

ADVERTISER = "7000000000000000001"
BASE = {"advertiser_ids": [ADVERTISER], "access_token": "tok-1234567890"}


def config(**settings: object) -> dict:
    return {**BASE, **settings}


def refused(**settings: object) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_definitions(config(**settings))
    message = str(caught.value)
    assert "\n" not in message
    return message


def full_schema() -> dict:
    schema = copy.deepcopy(TargetTikTokAudiences.config_jsonschema)
    TargetTikTokAudiences.append_builtin_config(schema)
    return schema


def schema_errors(settings: dict) -> list[str]:
    return [e.message for e in JSONSchemaValidator(full_schema()).iter_errors(settings)]


# The simple form


def test_a_spec_without_streams_reads_its_key_as_it_says():
    defs = resolve_definitions(
        config(
            consent_field="consent",
            audiences={
                "contacts": {
                    "audience_name": "Newsletter",
                    "sync_mode": "incremental",
                    "identifier_fields": {"phone": None},
                }
            },
        )
    )
    [audience] = defs.audiences.values()
    assert (audience.key, audience.streams, audience.simple) == ("contacts", ("contacts",), True)
    assert audience.audience_name == "Newsletter" and audience.audience_id is None
    assert audience.min_audience_size == setting_default("min_audience_size")
    assert audience.label == "Newsletter" and audience.target_key == f"name:{ADVERTISER}:Newsletter"
    source = defs.source("contacts")
    assert source.sync_mode == "incremental"
    assert source.identifier_fields["phone"] is None
    assert source.identifier_fields["email"] == "email", "merged with the default"
    assert source.consent_field == "consent", "the top level where the spec is silent"
    assert defs.audiences_of("contacts") == [audience]
    assert defs.is_read("contacts") and not defs.is_read("other")
    assert defs.audiences_of("other") == []


# Composed audiences


def test_a_composed_audience_unions_its_streams_and_reads_each_from_sources():
    defs = resolve_definitions(
        config(
            sync_mode="snapshot",
            exclude_streams=["unsubscribed", "bounced"],
            sources={"shop": {"sync_mode": "incremental", "membership_field": "active"}},
            audiences={
                "all": {
                    "audience_name": "All",
                    "streams": ["crm", "shop", "crm"],
                    "exclude_streams": ["staff", "bounced"],
                    "where": {"country": ["DE", "AT"], "account.tier": "gold"},
                    "share_with_advertiser_ids": ["7000000000000000002"] * 2,
                }
            },
        )
    )
    audience = defs.audiences["all"]
    assert audience.streams == ("crm", "shop") and not audience.simple
    assert audience.exclude_streams == ("staff", "bounced", "unsubscribed")
    assert audience.where == (("account.tier", ("gold",)), ("country", ("DE", "AT")))
    assert audience.share_with_advertiser_ids == ("7000000000000000002",)
    assert audience.lookalike is None and audience.split_by is None
    assert defs.source("shop").sync_mode == "incremental"
    assert defs.source("shop").membership_field == "active"
    assert defs.source("crm").sync_mode == "snapshot"
    for stream in ("crm", "shop", "staff", "unsubscribed"):
        assert defs.is_read(stream) and defs.audiences_of(stream) == [audience], stream
    assert not defs.is_read("orders")


def test_a_stream_feeding_one_audience_and_excluded_from_another_is_in_both():
    defs = resolve_definitions(
        config(
            audiences={
                "buyers": {"audience_name": "Buyers"},
                "prospects": {
                    "audience_name": "Prospects",
                    "streams": ["leads"],
                    "exclude_streams": ["buyers"],
                },
                "others": {"audience_name": "Others", "streams": ["leads"]},
            }
        )
    )
    assert [a.key for a in defs.audiences_of("buyers")] == ["buyers", "prospects"]
    assert [a.key for a in defs.audiences_of("leads")] == ["prospects", "others"]
    assert defs.audiences["others"].exclude_streams == ()


def test_split_by_names_each_value_from_the_template():
    defs = resolve_definitions(
        config(audiences={"tiers": {"audience_name": "Tier {value}", "split_by": "tier"}})
    )
    audience = defs.audiences["tiers"]
    assert audience.split_by == "tier" and audience.audience_name == "Tier {value}"
    assert [audience.name_for(v) for v in ("gold", 2, 1.5, True)] == [
        "Tier gold",
        "Tier 2",
        "Tier 1.5",
        "Tier true",
    ]
    assert audience.name_for("x" * 80) == ("Tier " + "x" * 80)[:67] + "...", "cut as TikTok cuts"


def test_a_lookalike_takes_the_schemas_defaults():
    spec = {"audience_name": "Look", "location_ids": ["6252001"]}
    defs = resolve_definitions(config(audiences={"c": {"lookalike": spec}}))
    look = defs.audiences["c"].lookalike
    assert look is not None
    assert (look.audience_name, look.location_ids) == ("Look", ("6252001",))
    assert (look.audience_size, look.mobile_os, look.placements) == ("BALANCED", "ALL", ("TikTok",))
    assert look.include_source is False
    given = {**spec, "audience_size": "BROAD", "mobile_os": "IOS", "placements": ["Pangle"]}
    look = (
        resolve_definitions(config(audiences={"c": {"lookalike": given}})).audiences["c"].lookalike
    )
    assert look is not None
    assert (look.audience_size, look.mobile_os, look.placements) == ("BROAD", "IOS", ("Pangle",))


# The implicit form: `audiences` empty


def test_every_stream_but_the_exclusions_feeds_an_audience_of_its_name():
    defs = resolve_definitions(
        config(exclude_streams=["suppressed"], sources={"leads": {"consent_field": "ok"}})
    )
    assert dict(defs.audiences) == {}
    [contacts] = defs.audiences_of("contacts")
    assert (contacts.key, contacts.audience_name, contacts.simple) == ("contacts", "contacts", True)
    assert contacts.exclude_streams == ("suppressed",)
    [leads] = defs.audiences_of("leads")
    assert defs.source("leads").consent_field == "ok"
    assert list(defs.audiences) == ["contacts", "leads"]
    assert defs.audiences_of("suppressed") == [contacts, leads]
    assert defs.is_read("anything")


def test_two_streams_of_one_tiktok_audience_are_refused_when_the_second_shows_up():
    defs = resolve_definitions(config())
    long = "S" * 67
    defs.audiences_of(long + "-first")
    with pytest.raises(ConfigError) as caught:
        defs.audiences_of(long + "-second")
    message = str(caught.value)
    assert message.startswith(f"stream '{long}-first' and stream '{long}-second' both sync")
    assert "`streams`" in message


# Refusals, each one line naming the cause and the fix


def test_two_specs_of_one_audience_name_both_keys_and_the_fix():
    message = refused(audiences={"a": {"audience_id": "5"}, "b": {"audience_id": "5"}})
    assert message.startswith("`audiences.a` and `audiences.b` both sync TikTok audience 5: ")
    assert "one spec per TikTok audience, with `streams`" in message
    message = refused(
        audiences={"a": {"audience_name": "Same"}, "b": {"audience_name": "Same", "streams": ["x"]}}
    )
    assert "`audiences.a` and `audiences.b` both sync TikTok audience 'Same' in advertiser" in (
        message
    )
    message = refused(
        audiences={
            "a": {"audience_name": "T {value}", "split_by": "t"},
            "b": {"audience_name": "T {value}", "split_by": "u", "streams": ["a"]},
        }
    )
    assert "`audiences.a` and `audiences.b`" in message
    other = {"advertiser_ids": ["7000000000000000002"]}
    resolve_definitions(
        config(audiences={"a": {"audience_name": "Same"}, "b": {"audience_name": "Same", **other}})
    )


@pytest.mark.parametrize("reading", ["identifier_fields", "sync_mode", "membership_field"])
def test_a_composed_spec_that_says_how_a_stream_is_read_is_sent_to_sources(reading):
    value = {"email": "mail"} if reading == "identifier_fields" else "incremental"
    message = refused(audiences={"vip": {"streams": ["crm"], reading: value}})
    assert message.startswith(f"`audiences.vip` has `streams` and sets `{reading}`")
    assert "`sources.<stream>`" in message


def test_consent_field_in_a_composed_spec_is_refused_too():
    assert "`sources.<stream>`" in refused(
        audiences={"v": {"streams": ["c"], "consent_field": "x"}}
    )


def test_a_spec_with_both_an_id_and_a_name_is_refused():
    message = refused(audiences={"c": {"audience_id": "5", "audience_name": "C"}})
    assert message == "`audiences.c` sets both audience_id and audience_name: keep one."


def test_empty_streams_are_refused():
    message = refused(audiences={"vip": {"streams": []}})
    assert message.startswith("`audiences.vip.streams` is empty: list the streams")


def test_a_stream_both_included_and_excluded_is_refused():
    message = refused(exclude_streams=["crm"], audiences={"vip": {"streams": ["crm", "shop"]}})
    assert message == (
        "`audiences.vip` both includes and excludes stream 'crm': remove it from `streams` or "
        "from `exclude_streams`"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"split_by": "tier"}, "`audiences.s` sets `split_by` but its `audience_name` is not set"),
        (
            {"split_by": "tier", "audience_name": "Tiers"},
            "`audiences.s` sets `split_by` but its `audience_name` lacks {value}",
        ),
        (
            {"split_by": "tier", "audience_id": "55"},
            "`audiences.s` sets `split_by` and `audience_id`",
        ),
    ],
)
def test_split_by_needs_a_name_with_value_and_no_id(spec, expected):
    assert refused(audiences={"s": spec}).startswith(expected)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"tier": {"a": 1}}, '`audiences.v.where.tier` holds dict {"a": 1}: give a string'),
        ({"tier": [["gold"]]}, '`audiences.v.where.tier` holds list ["gold"]: give a string'),
        ({"tier": []}, "`audiences.v.where.tier` is an empty array: no record could match"),
    ],
)
def test_where_takes_scalars_or_arrays_of_scalars(where, expected):
    assert refused(audiences={"v": {"where": where}}).startswith(expected)
    values = {"a": "x", "b": [1, 2.5, True, None]}
    resolve_definitions(config(audiences={"v": {"where": values}}))


@pytest.mark.parametrize(
    ("lookalike", "expected"),
    [
        ({"location_ids": ["1"]}, "`audiences.c.lookalike.audience_name` is not set"),
        ({"audience_name": "L"}, "`audiences.c.lookalike.location_ids` is not set"),
        ({"audience_name": "L", "location_ids": []}, "`audiences.c.lookalike.location_ids` is emp"),
        (
            {"audience_name": "L" * 129, "location_ids": ["1"]},
            "`audiences.c.lookalike.audience_name` is 129 characters, over TikTok's 128",
        ),
        (
            {"audience_name": "L", "location_ids": ["1"], "placements": []},
            "`audiences.c.lookalike.placements` is empty",
        ),
    ],
)
def test_a_lookalike_needs_a_name_and_locations(lookalike, expected):
    assert refused(audiences={"c": {"lookalike": lookalike}}).startswith(expected)


@pytest.mark.parametrize(
    ("key", "value"), [("audience_size", "HUGE"), ("mobile_os", "WINDOWS"), ("include_source", 1)]
)
def test_a_lookalikes_choices_are_the_schemas(key, value):
    lookalike = {"audience_name": "L", "location_ids": ["1"], key: value}
    [error] = schema_errors(config(audiences={"c": {"lookalike": lookalike}}))
    assert repr(value) in error


def test_share_with_advertiser_ids_must_be_numeric_ids():
    message = refused(audiences={"c": {"share_with_advertiser_ids": ["acme"]}})
    assert message.startswith("`audiences.c.share_with_advertiser_ids` holds 'acme', which is not")


def test_sources_of_a_simple_forms_stream_are_refused():
    message = refused(
        sources={"contacts": {"sync_mode": "incremental"}},
        audiences={"contacts": {"audience_name": "C"}},
    )
    assert message.startswith(
        "`sources.contacts` and `audiences.contacts` both say how stream 'contacts' is read"
    )
    assert "move the settings into `audiences.contacts`, or give that spec `streams`" in message


def test_sources_of_a_stream_nothing_reads_are_refused():
    message = refused(
        sources={"contact": {"sync_mode": "incremental"}},
        audiences={"all": {"audience_name": "All", "streams": ["contacts"]}},
    )
    assert message.startswith("`sources.contact` is for stream 'contact', which no audience reads")


def test_a_bad_identifier_fields_in_sources_is_named_there():
    message = refused(
        sources={"crm": {"identifier_fields": dict.fromkeys(("email", "phone", "idfa", "aaid"))}},
        audiences={"all": {"streams": ["crm"]}},
    )
    assert message.startswith("`sources.crm.identifier_fields` maps every identifier type to null")


def test_the_top_level_checks_run_too():
    with pytest.raises(ConfigError, match="`access_token` is not set"):
        resolve_definitions({"advertiser_ids": [ADVERTISER]})


# Strict names in the new objects


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"sources": {"crm": {"sync_mod": "incremental"}}},
            "unknown setting `sources.crm.sync_mod`: did you mean `sources.crm.sync_mode`?",
        ),
        (
            {"sources": {"crm": {"identifier_fields": {"emial": "e"}}}},
            "unknown setting `sources.crm.identifier_fields.emial`: did you mean "
            "`sources.crm.identifier_fields.email`?",
        ),
        (
            {"audiences": {"c": {"lookalike": {"location_id": ["1"]}}}},
            "unknown setting `audiences.c.lookalike.location_id`: did you mean "
            "`audiences.c.lookalike.location_ids`?",
        ),
        (
            {"audiences": {"c": {"exclude_stream": ["x"]}}},
            "unknown setting `audiences.c.exclude_stream`: did you mean "
            "`audiences.c.exclude_streams`?",
        ),
        (
            {"exclude_stream": ["x"]},
            "unknown setting `exclude_stream`: did you mean `exclude_streams`?",
        ),
    ],
)
def test_unknown_names_in_sources_and_lookalike_name_the_closest(settings, expected):
    with pytest.raises(ConfigError) as caught:
        check_setting_names(config(**settings), full_schema())
    assert str(caught.value) == expected


def test_every_spec_key_of_the_contract_is_known():
    spec = dict.fromkeys(
        (
            "audience_id",
            "audience_name",
            "advertiser_ids",
            "identifier_fields",
            "sync_mode",
            "membership_field",
            "consent_field",
            "min_audience_size",
            "max_removal_fraction",
            "streams",
            "exclude_streams",
            "where",
            "split_by",
            "share_with_advertiser_ids",
        )
    )
    spec["lookalike"] = dict.fromkeys(
        ("audience_name", "location_ids", "audience_size", "mobile_os", "placements")
    ) | {"include_source": None}
    source = dict.fromkeys(("identifier_fields", "sync_mode", "membership_field", "consent_field"))
    settings = config(audiences={"a": spec}, sources={"s": source}, exclude_streams=[])
    assert check_setting_names(settings, full_schema()) == []
