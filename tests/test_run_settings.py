"""RunSettings: every setting the run uses, each default the schema's own."""

from __future__ import annotations

import dataclasses

from target_tiktok_audiences.settings import RunSettings, config_schema, setting_default
from target_tiktok_audiences.target import TargetTikTokAudiences

ADVERTISER = "7000000000000000001"


def test_every_run_setting_defaults_to_the_schemas_default():
    run = RunSettings.from_config({"advertiser_ids": [ADVERTISER]})
    properties = config_schema["properties"]
    for field in dataclasses.fields(RunSettings):
        assert field.name in properties, field.name
        default = properties[field.name].get("default")
        if default is not None:
            assert getattr(run, field.name) == default, field.name
    assert run.access_token is None and run.advertiser_ids == (ADVERTISER,)


def test_a_null_run_setting_takes_its_default_and_a_given_one_wins():
    run = RunSettings.from_config(
        {"advertiser_ids": [ADVERTISER], "request_timeout": None, "max_retries": 2}
    )
    assert run.request_timeout == setting_default("request_timeout")
    assert run.max_retries == 2
    assert run.end_of_input_proves_snapshot
    assert not RunSettings.from_config(
        {"snapshot_end": "activate_version"}
    ).end_of_input_proves_snapshot


def test_the_target_builds_its_client_and_store_from_run_settings(tmp_path):
    config = {
        "advertiser_ids": [ADVERTISER],
        "dry_run": True,
        "dry_run_output": str(tmp_path / "planned.jsonl"),
        "membership_store": str(tmp_path / "m.sqlite"),
        "request_timeout": None,
        "max_retries": 3,
        "batch_size": 7,
        "store_timeout": 9,
    }
    run = TargetTikTokAudiences(config=config).run
    try:
        client = run.client
        assert client.timeout == setting_default("request_timeout"), "null: the default"
        assert (client.max_retries, client.batch_size) == (3, 7)
        assert client.api_url == setting_default("api_url")
        assert run.store.path == str(tmp_path / "m.sqlite")
        assert run.store._db.timeout == 9
    finally:
        run.close()
    assert (tmp_path / "planned.jsonl").exists()
