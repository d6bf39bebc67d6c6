"""The Hub definition (meltano-hub.yml), meltano.yml and `--about` describe one loader.

meltano-hub.yml is the file Meltano Hub would take. It is checked as the Hub's CI checks a
definition: against the Hub's own loader schema, with every `$ref` resolved within the copy, and
by yamllint with the Hub's config, both copied unmodified from meltano/hub into tests/hub_schemas/
(its README names the commit). Then the three descriptions of the loader must agree: the same
settings, defaults, kinds and capabilities.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry
from referencing.jsonschema import DRAFT7
from yamllint import linter
from yamllint.config import YamlLintConfig

from target_tiktok_audiences.sinks import AudienceSink
from tests.conftest import _SCRIPT

REPO = Path(__file__).resolve().parents[1]
HUB_SCHEMAS = Path(__file__).with_name("hub_schemas")
LOADER = "target-tiktok-audiences"
# Meltano setting kind for each JSON type of the settings schema. Numbers are `string`: Meltano
# 4.4 cannot pass an environment value of a `decimal` setting (see meltano-hub.yml).
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": "string",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}
# What issue 16 asks of a definition beyond the Hub's own required keys.
WANTED = {
    "variant",
    "quality",
    "label",
    "description",
    "logo_url",
    "keywords",
    "maintenance_status",
    "capabilities",
    "settings",
    "settings_group_validation",
    "pip_url",
    "repo",
    "namespace",
}


def hub_definition() -> dict[str, Any]:
    return yaml.safe_load((REPO / "meltano-hub.yml").read_text())


def project_loader() -> dict[str, Any]:
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    [loader] = [p for p in project["plugins"]["loaders"] if p["name"] == LOADER]
    return loader


@pytest.fixture(scope="module")
def about() -> dict[str, Any]:
    """What the installed console script says of itself."""
    proc = subprocess.run(
        [_SCRIPT, "--about", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


LOADER_SCHEMA_ID = "loaders.schema.json"


def hub_registry() -> Registry:
    """The copied schema files, each under its `$id`, as the Hub's own check registers them.

    No `retrieve`: a `$ref` to a file the copy lacks raises instead of being fetched.
    """
    resources = []
    for path in sorted(HUB_SCHEMAS.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], DRAFT7.create_resource(contents)))
    return Registry().with_resources(resources)


def hub_validator() -> Draft7Validator:
    registry = hub_registry()
    return Draft7Validator(registry.contents(LOADER_SCHEMA_ID), registry=registry)


def hub_errors(definition: dict[str, Any]) -> list[str]:
    return [error.message for error in hub_validator().iter_errors(definition)]


def test_hub_definition_follows_the_hubs_loader_rules():
    definition = hub_definition()
    assert hub_errors(definition) == []
    assert set(definition) >= WANTED
    assert "meltano_sdk" in definition["keywords"]
    assert definition["name"] == LOADER
    assert definition["namespace"] == "target_tiktok_audiences"
    assert definition["pip_url"] == LOADER, "the Hub installs the package from PyPI"
    assert definition["repo"].startswith("https://github.com/")
    # The Hub's convention for a loader's logo (the Hub PR adds the file; see README).
    assert definition["logo_url"] == "/assets/logos/loaders/tiktok.png"
    for setting in definition["settings"]:
        assert setting.get("label") and setting.get("description") and setting.get("kind")


def test_hub_definition_passes_the_hubs_yamllint():
    """The Hub's CI lints each changed definition with its .yamllint.yaml: keys sorted, and more."""
    config = YamlLintConfig(file=str(HUB_SCHEMAS / ".yamllint.yaml"))
    text = (REPO / "meltano-hub.yml").read_text()
    assert [f"line {p.line}: {p.message}" for p in linter.run(text, config)] == []
    unsorted = [p.rule for p in linter.run("name: x\nlabel: X\n", config)]
    assert unsorted == ["key-ordering"], "the config in use refuses what the Hub's refuses"


def test_the_hub_rules_refuse_what_the_hub_refuses():
    """The copied schema refuses what the Hub refuses: the schema check above can fail."""
    good = hub_definition()
    assert hub_errors({k: v for k, v in good.items() if k != "quality"})
    assert hub_errors({**good, "quality": "platinum"})
    assert hub_errors({**good, "maintenance_status": "maintained"})
    assert hub_errors({**good, "capabilities": ["about", "schema-flatening"]})
    assert hub_errors({**good, "homepage": "https://example.com"})
    setting = {**good["settings"][0], "kind": "secret"}
    assert hub_errors({**good, "settings": [setting]})
    setting = {**good["settings"][0], "secret": True}
    assert hub_errors({**good, "settings": [setting]})


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_copy_is_the_loader_schema_and_all_it_refers_to():
    """Every `$ref` followed from the loader schema resolves in the copy, and reaches all of it."""
    registry = hub_registry()
    reached, todo = {LOADER_SCHEMA_ID}, [LOADER_SCHEMA_ID]
    while todo:
        uri = todo.pop()
        resolver = registry.resolver(base_uri=uri)
        for ref in refs(registry.contents(uri)):
            target = resolver.lookup(ref).contents["$id"]
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert reached == set(registry)


def json_type(spec: dict[str, Any]) -> str:
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    [kind] = [t for t in types if t != "null"]
    return kind


@pytest.mark.parametrize("source", ["meltano-hub.yml", "meltano.yml"])
def test_settings_defaults_and_kinds_agree_with_about(source, about):
    declared = hub_definition() if source == "meltano-hub.yml" else project_loader()
    schema = about["settings"]["properties"]
    settings = declared["settings"]
    assert [s["name"] for s in settings] == list(schema), "every setting, in --about's order"
    for setting in settings:
        name = setting["name"]
        spec = schema[name]
        assert setting.get("value") == spec.get("default"), name
        assert ("value" in setting) is ("default" in spec), name
        assert setting["description"] == spec["description"], name
        assert setting.get("sensitive", False) is bool(spec.get("secret")), name
        if spec.get("secret"):
            assert setting["kind"] == "password", name
        elif "enum" in spec:
            assert setting["kind"] == "options", name
            assert [o["value"] for o in setting["options"]] == spec["enum"], name
        else:
            assert setting["kind"] == KINDS[json_type(spec)], name
    assert {s["name"] for s in settings if s["kind"] == "options"} == {
        "sync_mode",
        "snapshot_end",
        "phone_format",
        "email_normalization",
    }


def test_about_shows_the_real_batch_size_rows_and_no_flattening(about):
    schema = about["settings"]["properties"]
    assert schema["batch_size_rows"]["default"] == AudienceSink.MAX_SIZE_DEFAULT == 20000
    assert not [name for name in schema if name.startswith("flattening")]
    assert "process_activate_version_messages" not in schema


def test_capabilities_agree_and_are_the_real_ones(about):
    real = ["about", "stream-maps", "structured-logging", "activate-version"]
    assert about["capabilities"] == real
    assert hub_definition()["capabilities"] == real
    assert project_loader()["capabilities"] == real
    assert hub_definition()["supported_python_versions"] == about["supported_python_versions"]


def test_meltano_yml_declares_the_loader_as_the_hub_does():
    """meltano.yml's loader is the Hub definition as `meltano add --from-ref` writes it."""
    loader, definition = project_loader(), hub_definition()
    assert loader["pip_url"] == "-e ."
    for key in (
        "namespace",
        "executable",
        "label",
        "description",
        "capabilities",
        "settings_group_validation",
        "commands",
        "settings",
    ):
        assert loader[key] == definition[key], key
