"""Tests for the fake TikTok Business API used by the end-to-end tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import requests

from tests import fake_tiktok
from tests.fake_tiktok import RATE_LIMIT_KINDS, FakeTikTok, RateLimit

ADV = "7000000000000000001"
ADV2 = "7000000000000000002"  # same business center, token may use it
ADV_BC2 = "7000000000000000003"  # other business center, token may use it
ADV_NOPE = "7000000000000000004"  # exists, token may not use it
TOKEN = "test-token"
APP, SECRET = "app-1", "s3cret"
MAPPING = "segment/mapping/"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def md5(value: str) -> str:
    return hashlib.md5(value.encode()).hexdigest()


@pytest.fixture
def fake():
    with FakeTikTok(max_batch=50, seed=7) as f:
        f.add_advertiser(ADV, name="Main")
        f.add_advertiser(ADV2, name="Second")
        f.add_advertiser(ADV_BC2, name="Other BC", business_center="bc2")
        f.add_advertiser(ADV_NOPE, name="Not mine")
        f.add_token(TOKEN, [ADV, ADV2, ADV_BC2])
        f.add_app(APP, SECRET)
        yield f


@pytest.fixture
def aud(fake):
    return fake.add_audience(ADV, "crm")


def call(fake, method, path, *, body=None, params=None, token=TOKEN, headers=None, timeout=10):
    hdrs = {} if token is None else {"Access-Token": token}
    if body is not None:
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    data = json.dumps(body) if body is not None else None
    return requests.request(
        method, fake.url + path, data=data, params=params, headers=hdrs, timeout=timeout
    )


def code(resp) -> int:
    assert resp.status_code == 200, resp.text
    env = resp.json()
    assert set(env) == {"code", "message", "request_id", "data"}
    return env["code"]


def mapping(audience_ids, rows, *, schema=("EMAIL_SHA256",), action="add", advertisers=(ADV,)):
    return {
        "advertiser_ids": list(advertisers),
        "action": action,
        "id_schema": list(schema),
        "batch_data": rows,
    }


def entry(ident, audience_id):
    return {"id": ident, "audience_ids": [audience_id]}


def email_rows(audience_id, n, prefix="p"):
    return [[entry(sha(f"{prefix}{i}@example.com"), audience_id)] for i in range(n)]


# ----------------------------------------------------------------------------- auth and shape


def test_missing_token(fake, aud):
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)), token=None)) == (
        40104
    )


def test_bad_token(fake, aud):
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)), token="nope")
    assert code(resp) == 40105


def test_bearer_header_is_not_accepted(fake, aud):
    resp = call(
        fake,
        "POST",
        MAPPING,
        body=mapping(aud, email_rows(aud, 1)),
        token=None,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert code(resp) == 40104
    assert "Bearer" in resp.json()["message"]
    assert fake.members(aud) == {}


def test_removed_token_is_invalid(fake):
    assert code(call(fake, "GET", "user/info/")) == 0
    fake.remove_token(TOKEN)
    assert code(call(fake, "GET", "user/info/")) == 40105


def test_wrong_content_type(fake, aud):
    resp = requests.post(
        fake.url + MAPPING,
        data=json.dumps(mapping(aud, email_rows(aud, 1))),
        headers={"Access-Token": TOKEN, "Content-Type": "text/plain"},
        timeout=10,
    )
    assert code(resp) == 40000
    resp = requests.post(
        fake.url + MAPPING,
        data=json.dumps(mapping(aud, email_rows(aud, 1))),
        headers={"Access-Token": TOKEN},
        timeout=10,
    )
    assert code(resp) == 40000
    assert fake.members(aud) == {}


def test_charset_in_content_type_is_fine(fake, aud):
    resp = requests.post(
        fake.url + MAPPING,
        data=json.dumps(mapping(aud, email_rows(aud, 1))),
        headers={"Access-Token": TOKEN, "Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert code(resp) == 0


@pytest.mark.parametrize("raw", ["[1, 2]", "not json", "", "null"])
def test_body_must_be_a_json_object(fake, raw):
    resp = requests.post(
        fake.url + MAPPING,
        data=raw,
        headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
        timeout=10,
    )
    assert code(resp) == 40000


def test_envelope_and_request_id(fake):
    resp = call(fake, "GET", "user/info/")
    env = resp.json()
    assert resp.status_code == 200
    assert env["code"] == 0 and env["message"] == "OK" and env["request_id"]
    assert env["data"]["display_name"] == "fake user" and env["data"]["id"]
    assert call(fake, "GET", "user/info/").json()["request_id"] != env["request_id"]


def test_unknown_path_and_missing_slash_are_404(fake):
    assert call(fake, "GET", "no/such/").status_code == 404
    assert call(fake, "GET", "user/info").status_code == 404
    assert requests.get(fake.url.replace("v1.3", "v1.2") + "user/info/", timeout=5).status_code == (
        404
    )


def test_wrong_method_is_405(fake, aud):
    assert call(fake, "GET", MAPPING).status_code == 405
    assert call(fake, "POST", "user/info/", body={}).status_code == 405
    assert call(fake, "DELETE", "segment/audience/").status_code == 405


def test_chunked_body_is_read(fake, aud):
    payload = json.dumps(mapping(aud, email_rows(aud, 3))).encode()
    resp = requests.post(
        fake.url + MAPPING,
        data=iter([payload[:10], payload[10:]]),
        headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
        timeout=10,
    )
    assert code(resp) == 0
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 3


# ----------------------------------------------------------------------------- mapping validation


@pytest.mark.parametrize(
    ("advertisers", "expected"),
    [
        (["7999999999999999999"], 40300),
        ([ADV_NOPE], 40001),
        ([ADV, ADV_BC2], 40000),
        ([], 40000),
        ("7000000000000000001", 40000),
        ([7000000000000000001], 40000),
    ],
)
def test_mapping_advertisers(fake, aud, advertisers, expected):
    body = mapping(aud, email_rows(aud, 1))
    body["advertiser_ids"] = advertisers
    assert code(call(fake, "POST", MAPPING, body=body)) == expected


def test_mapping_two_advertisers_same_business_center(fake, aud):
    other = fake.add_audience(ADV2, "second")
    rows = [[entry(sha("a@x.io"), aud)], [entry(sha("b@x.io"), other)]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows, advertisers=[ADV, ADV2]))) == 0
    assert fake.members(aud) == {"EMAIL_SHA256": {sha("a@x.io")}}
    assert fake.members(other) == {"EMAIL_SHA256": {sha("b@x.io")}}


@pytest.mark.parametrize("action", ["remove", "ADD", None, ""])
def test_mapping_bad_action(fake, aud, action):
    body = mapping(aud, email_rows(aud, 1), action=action)
    assert code(call(fake, "POST", MAPPING, body=body)) == 40000


@pytest.mark.parametrize(
    "schema",
    [
        ["EMAIL"],
        ["EMAIL_SHA256", "EMAIL_SHA256"],
        ["GAID_SHA256"],
        [],
        "EMAIL_SHA256",
    ],
)
def test_mapping_bad_schema(fake, aud, schema):
    body = mapping(aud, email_rows(aud, 1))
    body["id_schema"] = schema
    assert code(call(fake, "POST", MAPPING, body=body)) == 40000


def test_mapping_misaligned_row(fake, aud):
    rows = [
        [entry(sha("a@x.io"), aud), {}],
        [entry(sha("b@x.io"), aud)],  # phone slot skipped instead of {}
    ]
    resp = call(
        fake, "POST", MAPPING, body=mapping(aud, rows, schema=["EMAIL_SHA256", "PHONE_SHA256"])
    )
    assert code(resp) == 40000
    assert "row 1 has 1 entries, id_schema has 2" in resp.json()["message"]
    assert fake.members(aud) == {}


@pytest.mark.parametrize(
    ("schema", "ident"),
    [
        ("EMAIL_SHA256", "jane@example.com"),
        ("PHONE_SHA256", "+14155550100"),
        ("EMAIL_SHA256", sha("x").upper()),
        ("EMAIL_SHA256", sha("x")[:63]),
        ("EMAIL_SHA256", sha("x") + "0"),
        ("EMAIL_SHA256", "g" * 64),
        ("IDFA_MD5", sha("x")),  # a SHA-256 in an MD5 slot
        ("AAID_SHA256", md5("x")),  # an MD5 in a SHA-256 slot
        ("IDFA_SHA256", "5f3a2b18-9c4d-4e7f-b8e2-17d3a1e69b25"),
        ("EMAIL_SHA256", "é" * 64),
    ],
)
def test_mapping_unhashed_id_is_40062(fake, aud, schema, ident):
    good = md5 if schema.endswith("MD5") else sha
    rows = [[entry(good(f"{i}"), aud)] for i in range(5)]
    rows.insert(2, [entry(ident, aud)])
    resp = call(fake, "POST", MAPPING, body=mapping(aud, rows, schema=[schema]))
    assert code(resp) == 40062
    assert "PII not hashed" in resp.json()["message"]
    assert fake.members(aud) == {}


def test_mapping_md5_schemas_accept_32_hex(fake, aud):
    rows = [[entry(md5("idfa"), aud), entry(md5("aaid"), aud)]]
    resp = call(fake, "POST", MAPPING, body=mapping(aud, rows, schema=["IDFA_MD5", "AAID_MD5"]))
    assert code(resp) == 0
    assert fake.members(aud) == {"IDFA_MD5": {md5("idfa")}, "AAID_MD5": {md5("aaid")}}


def test_mapping_unknown_audience(fake, aud):
    rows = [[entry(sha("a@x.io"), aud)], [entry(sha("b@x.io"), "7199999999999999999")]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 40007
    assert fake.members(aud) == {}


def test_mapping_audience_of_another_advertiser(fake, aud):
    foreign = fake.add_audience(ADV2, "theirs")
    rows = [[entry(sha("a@x.io"), aud)], [entry(sha("b@x.io"), foreign)]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 40001
    assert fake.members(aud) == {}
    assert fake.members(foreign) == {}


def test_mapping_batch_over_max_batch_is_40011(fake, aud):
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 51)))) == 40011
    assert fake.members(aud) == {}
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 50)))) == 0
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 50


def test_mapping_all_empty_row(fake, aud):
    rows = [[entry(sha("a@x.io"), aud), {}], [{}, {}]]
    resp = call(
        fake, "POST", MAPPING, body=mapping(aud, rows, schema=["EMAIL_SHA256", "PHONE_SHA256"])
    )
    assert code(resp) == 40000
    assert "row 1" in resp.json()["message"]
    assert fake.members(aud) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"id": sha("b"), "audience_ids": []},
        {"id": sha("b"), "audience_ids": "AUD"},
        {"id": sha("b"), "audience_ids": [123]},
        {"id": sha("b")},
        {"audience_ids": ["AUD"]},
        {"id": sha("b"), "audience_ids": ["AUD"], "extra": 1},
        {"id": 5, "audience_ids": ["AUD"]},
        "not an object",
        None,
    ],
)
def test_mapping_malformed_entry(fake, aud, bad):
    if isinstance(bad, dict) and isinstance(bad.get("audience_ids"), list):
        bad = {**bad, "audience_ids": [aud if a == "AUD" else a for a in bad["audience_ids"]]}
    rows = [[entry(sha("a@x.io"), aud)], [bad]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 40000
    assert fake.members(aud) == {}


@pytest.mark.parametrize("batch", [[], None, "rows", [["x"]], [[{}], 5]])
def test_mapping_bad_batch_data(fake, aud, batch):
    body = mapping(aud, [])
    body["batch_data"] = batch
    assert code(call(fake, "POST", MAPPING, body=body)) == 40000


# ----------------------------------------------------------------------------- mapping effects


def test_add_then_delete_changes_members(fake, aud):
    schema = ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256"]
    rows = [
        [entry(sha("a@x.io"), aud), entry(sha("+14155550100"), aud), {}],
        [{}, entry(sha("+14155550101"), aud), {}],  # phone-only person
        [entry(sha("c@x.io"), aud), {}, entry(sha("idfa-1"), aud)],
    ]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows, schema=schema))) == 0
    assert fake.members(aud) == {
        "EMAIL_SHA256": {sha("a@x.io"), sha("c@x.io")},
        "PHONE_SHA256": {sha("+14155550100"), sha("+14155550101")},
        "IDFA_SHA256": {sha("idfa-1")},
    }
    # adding again is idempotent
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows, schema=schema))) == 0
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 2

    delete = [[{}, entry(sha("+14155550100"), aud)], [entry(sha("idfa-1"), aud), {}]]
    body = mapping(aud, delete, schema=["IDFA_SHA256", "PHONE_SHA256"], action="delete")
    assert code(call(fake, "POST", MAPPING, body=body)) == 0
    assert fake.members(aud) == {
        "EMAIL_SHA256": {sha("a@x.io"), sha("c@x.io")},
        "PHONE_SHA256": {sha("+14155550101")},
    }
    # deleting what is not there is fine
    assert code(call(fake, "POST", MAPPING, body=body)) == 0


def test_one_entry_can_target_several_audiences(fake, aud):
    other = fake.add_audience(ADV, "second")
    rows = [[{"id": sha("a@x.io"), "audience_ids": [aud, other]}]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 0
    assert fake.members(aud) == fake.members(other) == {"EMAIL_SHA256": {sha("a@x.io")}}


def test_mixed_audience_lists_in_one_batch(fake, aud):
    other = fake.add_audience(ADV, "second")
    rows = [[entry(sha(f"{i}"), aud if i % 2 else other)] for i in range(10)]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 0
    assert fake.members(aud)["EMAIL_SHA256"] == {sha(f"{i}") for i in range(1, 10, 2)}
    assert fake.members(other)["EMAIL_SHA256"] == {sha(f"{i}") for i in range(0, 10, 2)}


def test_failing_request_applies_nothing(fake, aud):
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 3, "keep")))) == 0
    before = fake.members(aud)
    rows = email_rows(aud, 40, "new")
    rows[-1] = [entry("last-person@example.com", aud)]  # the last row is bad
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 40062
    assert fake.members(aud) == before
    delete = [*email_rows(aud, 3, "keep"), [entry(sha("z"), "7199999999999999999")]]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, delete, action="delete"))) == 40007
    assert fake.members(aud) == before


def test_concurrent_adds_are_all_kept(fake, aud):
    def send(k):
        rows = email_rows(aud, 50, f"t{k}-")
        assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows))) == 0

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 400


def test_big_batches_are_quick():
    with FakeTikTok() as f:
        f.add_advertiser(ADV)
        f.add_token(TOKEN, [ADV])
        aud = f.add_audience(ADV, "big")
        schema = ["EMAIL_SHA256", "PHONE_SHA256"]
        session = requests.Session()
        started = time.monotonic()
        for k in range(5):
            rows = [
                [entry(sha(f"e{k}-{i}"), aud), entry(sha(f"p{k}-{i}"), aud) if i % 3 else {}]
                for i in range(5000)
            ]
            resp = session.post(
                f.url + MAPPING,
                data=json.dumps(mapping(aud, rows, schema=schema)),
                headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
                timeout=30,
            )
            assert code(resp) == 0
        elapsed = time.monotonic() - started
        members = f.members(aud)
        assert len(members["EMAIL_SHA256"]) == 25000
        assert len(members["PHONE_SHA256"]) == 5 * len([i for i in range(5000) if i % 3])
        assert elapsed < 10, elapsed


# ----------------------------------------------------------------------------- segment/audience


def test_create_audience(fake):
    body = {"advertiser_id": ADV, "action": "create", "custom_audience_name": "Newsletter"}
    first = call(fake, "POST", "segment/audience/", body=body)
    second = call(fake, "POST", "segment/audience/", body=body)
    assert code(first) == code(second) == 0
    a1, a2 = first.json()["data"]["audience_id"], second.json()["data"]["audience_id"]
    assert a1.isdigit() and int(a2) == int(a1) + 1  # names are not unique
    assert [a["name"] for a in fake.audiences()] == ["Newsletter", "Newsletter"]
    assert fake.audience(a1)["advertiser_id"] == ADV


def test_create_truncates_long_names(fake):
    def create(name):
        body = {"advertiser_id": ADV, "action": "create", "custom_audience_name": name}
        resp = call(fake, "POST", "segment/audience/", body=body)
        assert code(resp) == 0
        return fake.audience(resp.json()["data"]["audience_id"])["name"]

    assert create("x" * 70) == "x" * 70
    assert create("y" * 71) == "y" * 67 + "..."
    assert len(create("z" * 200)) == 70


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"advertiser_id": "7999999999999999999", "custom_audience_name": "n"}, 40300),
        ({"advertiser_id": ADV_NOPE, "custom_audience_name": "n"}, 40001),
        ({"custom_audience_name": "n"}, 40000),
        ({"advertiser_id": ADV, "custom_audience_name": ""}, 40000),
        ({"advertiser_id": ADV}, 40000),
        ({"advertiser_id": ADV, "custom_audience_name": 5}, 40000),
    ],
)
def test_create_audience_errors(fake, body, expected):
    resp = call(fake, "POST", "segment/audience/", body={**body, "action": "create"})
    assert code(resp) == expected
    assert fake.audiences() == []


def test_delete_audience(fake, aud):
    body = {"advertiser_id": ADV, "action": "delete", "delete_audience_id": "7199999999999999999"}
    assert code(call(fake, "POST", "segment/audience/", body=body)) == 40007
    body["delete_audience_id"] = aud
    assert code(call(fake, "POST", "segment/audience/", body=body)) == 0
    assert fake.audiences() == []
    assert code(call(fake, "POST", "segment/audience/", body=body)) == 40007
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))) == 40007


def test_segment_audience_unknown_action(fake):
    body = {"advertiser_id": ADV, "action": "rename", "custom_audience_name": "n"}
    assert code(call(fake, "POST", "segment/audience/", body=body)) == 40000


# ----------------------------------------------------------------------------- reading audiences


def get_audiences(fake, ids, advertiser=ADV):
    params = {"advertiser_id": advertiser, "custom_audience_ids": json.dumps(ids)}
    return call(fake, "GET", "dmp/custom_audience/get/", params=params)


def test_get_audience_shape_and_cover_num(fake, aud):
    schema = ["EMAIL_SHA256", "PHONE_SHA256"]
    rows = [[entry(sha(f"e{i}"), aud), entry(sha(f"p{i}"), aud)] for i in range(6)]
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, rows, schema=schema))) == 0
    resp = get_audiences(fake, [aud])
    assert code(resp) == 0
    (item,) = resp.json()["data"]["list"]
    details = item["audience_details"]
    assert details["audience_id"] == aud
    assert details["name"] == "crm"
    assert details["type"] == "Partner"
    assert details["advertiser_id"] == ADV
    assert details["cover_num"] == 7  # 12 distinct ids * 0.6, rounded down
    assert details["is_valid"] is True and details["is_expiring"] is False
    created = time.strptime(details["create_time"], "%Y-%m-%d %H:%M:%S")
    expires = time.strptime(details["expired_time"], "%Y-%m-%d %H:%M:%S")
    assert round((time.mktime(expires) - time.mktime(created)) / 86400) == 365

    fake.set_audience_details(
        aud, cover_num=1234, is_valid=False, is_expiring=True, expired_time="2030-01-01 00:00:00"
    )
    details = get_audiences(fake, [aud]).json()["data"]["list"][0]["audience_details"]
    assert details["cover_num"] == 1234
    assert details["is_valid"] is False and details["is_expiring"] is True
    assert details["expired_time"] == "2030-01-01 00:00:00"
    assert fake.audience(aud)["cover_num"] == 1234


def test_get_audience_errors(fake, aud):
    foreign = fake.add_audience(ADV2, "theirs")
    assert code(get_audiences(fake, [aud, "7199999999999999999"])) == 40007
    assert code(get_audiences(fake, [aud, foreign])) == 40001
    assert code(get_audiences(fake, [])) == 40000
    assert code(get_audiences(fake, [aud] * 101)) == 40000
    assert code(get_audiences(fake, [aud], advertiser=ADV_NOPE)) == 40001
    assert code(get_audiences(fake, [int(aud)])) == 40000
    raw = {"advertiser_id": ADV, "custom_audience_ids": aud}  # not JSON-encoded
    assert code(call(fake, "GET", "dmp/custom_audience/get/", params=raw)) == 40000
    params = {"custom_audience_ids": json.dumps([aud])}
    assert code(call(fake, "GET", "dmp/custom_audience/get/", params=params)) == 40000
    assert code(get_audiences(fake, [aud] * 100)) == 0


def test_list_audiences_paging(fake):
    ids = [fake.add_audience(ADV, f"aud {i}") for i in range(5)]
    fake.add_audience(ADV2, "not listed")

    def page(n, size):
        params = {"advertiser_id": ADV, "page": n, "page_size": size}
        return call(fake, "GET", "dmp/custom_audience/list/", params=params)

    seen = []
    for n in (1, 2, 3):
        data = page(n, 2).json()["data"]
        assert data["page_info"] == {"page": n, "page_size": 2, "total_number": 5, "total_page": 3}
        seen += [item["audience_id"] for item in data["list"]]
        for item in data["list"]:
            assert item["audience_type"] == "Partner" and "type" not in item
            assert {"name", "cover_num", "is_valid", "is_expiring", "expired_time"} <= set(item)
    assert seen == ids
    assert page(4, 2).json()["data"]["list"] == []
    assert code(page(0, 2)) == 40000
    assert code(page(1, 0)) == 40000
    assert code(page(1, 101)) == 40000
    assert code(page("x", 10)) == 40000
    assert code(page(1, 100)) == 0
    params = {"advertiser_id": ADV_NOPE}
    assert code(call(fake, "GET", "dmp/custom_audience/list/", params=params)) == 40001


# ----------------------------------------------------------------------------- sharing

SHARE, CANCEL = "dmp/custom_audience/share/", "dmp/custom_audience/share/cancel/"
LOOKALIKE = "dmp/custom_audience/lookalike/create/"


def share_body(audience_ids, shared, advertiser=ADV):
    return {
        "advertiser_id": advertiser,
        "custom_audience_ids": audience_ids,
        "shared_advertiser_ids": shared,
    }


def test_share_then_cancel_is_remembered(fake, aud):
    assert fake.shares(aud) == set()
    assert code(call(fake, "POST", SHARE, body=share_body([aud], [ADV2, ADV_NOPE]))) == 0
    assert fake.shares(aud) == {ADV2, ADV_NOPE}
    assert code(call(fake, "POST", SHARE, body=share_body([aud], [ADV2]))) == 0  # again: no-op
    assert code(call(fake, "POST", CANCEL, body=share_body([aud], [ADV2]))) == 0
    assert fake.shares(aud) == {ADV_NOPE}
    assert [e["body"] for e in fake.requests_log(SHARE)] == [
        share_body([aud], [ADV2, ADV_NOPE]),
        share_body([aud], [ADV2]),
    ]
    assert len(fake.requests_log(CANCEL)) == 1


def test_share_outside_the_business_center_is_40001_naming_the_advertiser(fake, aud):
    resp = call(fake, "POST", SHARE, body=share_body([aud], [ADV2, ADV_BC2]))
    assert code(resp) == 40001
    assert ADV_BC2 in resp.json()["message"] and "Business Center" in resp.json()["message"]
    assert fake.shares(aud) == set()  # nothing of a refused request is applied


@pytest.mark.parametrize("path", [SHARE, CANCEL])
def test_share_body_is_checked_exactly(fake, aud, path):
    foreign = fake.add_audience(ADV2, "theirs")
    many = [fake.add_audience(ADV, f"a{i}") for i in range(11)]
    refused = {
        40000: [
            {"advertiser_id": ADV, "custom_audience_ids": [aud]},  # shared_advertiser_ids missing
            {**share_body([aud], [ADV2]), "note": "x"},  # a key the endpoint does not take
            share_body([aud], [ADV2], advertiser=int(ADV)),
            share_body([], [ADV2]),
            share_body(many, [ADV2]),  # 11 audiences
            share_body(aud, [ADV2]),  # not a list
            share_body([aud], []),
            share_body([aud], [ADV2] * 11),
            share_body([aud], [int(ADV2)]),
            share_body([aud], [ADV]),  # the owner itself
        ],
        40007: [share_body([aud, "7199999999999999999"], [ADV2])],
        40001: [
            share_body([foreign], [ADV_NOPE]),  # owned by another advertiser
            share_body([aud], [ADV2], advertiser=ADV_NOPE),  # the token may not use the owner
        ],
        40300: [share_body([aud], ["7999999999999999999"])],
    }
    for expected, bodies in refused.items():
        for body in bodies:
            assert code(call(fake, "POST", path, body=body)) == expected, body
    assert code(call(fake, "POST", path, body=share_body(many[:10], [ADV2] * 10))) == 0
    assert all(fake.shares(a) == set() for a in (aud, foreign))


def test_a_deleted_audience_takes_its_shares_along(fake, aud):
    assert code(call(fake, "POST", SHARE, body=share_body([aud], [ADV2]))) == 0
    fake.delete_audience(aud)
    assert code(call(fake, "POST", CANCEL, body=share_body([aud], [ADV2]))) == 40007


# ----------------------------------------------------------------------------- lookalikes


def fill(fake, audience_id, people, advertiser=ADV):
    """Add `people` people to an audience through segment/mapping/, 50 a request."""
    rows = email_rows(audience_id, people)
    for start in range(0, people, 50):
        body = mapping(audience_id, rows[start : start + 50], advertisers=(advertiser,))
        assert code(call(fake, "POST", MAPPING, body=body)) == 0


def lookalike_body(source, name="Lookalike of crm", advertiser=ADV, **spec):
    return {
        "advertiser_id": advertiser,
        "custom_audience_name": name,
        "lookalike_spec": {
            "source_audience_id": source,
            "include_source": False,
            "location_ids": ["6252001"],
            "mobile_os": "ALL",
            "placements": ["TikTok"],
            "audience_size": "BALANCED",
            **spec,
        },
    }


def test_lookalike_of_100_people_is_an_audience_of_type_lookalike(fake, aud):
    fill(fake, aud, 100)
    body = lookalike_body(aud, mobile_os="IOS", audience_size="BROAD", include_source=True)
    resp = call(fake, "POST", LOOKALIKE, body=body)
    assert code(resp) == 0
    lookalike = resp.json()["data"]["audience_id"]
    (item,) = get_audiences(fake, [lookalike]).json()["data"]["list"]
    assert item["audience_details"]["type"] == "Lookalike"
    assert item["audience_details"]["name"] == "Lookalike of crm"
    params = {"advertiser_id": ADV, "page": 1, "page_size": 10}
    listed = call(fake, "GET", "dmp/custom_audience/list/", params=params).json()["data"]["list"]
    assert [(a["audience_id"], a["audience_type"]) for a in listed] == [
        (aud, "Partner"),
        (lookalike, "Lookalike"),
    ]
    assert len(fake.requests_log(LOOKALIKE)) == 1


def test_lookalike_source_needs_100_people_and_may_not_be_a_lookalike(fake, aud):
    fill(fake, aud, 99)
    resp = call(fake, "POST", LOOKALIKE, body=lookalike_body(aud))
    assert code(resp) == 40002
    assert "99 people" in resp.json()["message"] and "100" in resp.json()["message"]
    fill(fake, aud, 100)  # the first 99 again, and one more
    lookalike = call(fake, "POST", LOOKALIKE, body=lookalike_body(aud)).json()["data"]
    fill(fake, lookalike["audience_id"], 100)
    resp = call(fake, "POST", LOOKALIKE, body=lookalike_body(lookalike["audience_id"]))
    assert code(resp) == 40002
    assert "is a lookalike" in resp.json()["message"]
    assert [a["type"] for a in fake.audiences()] == ["Partner", "Lookalike"]


@pytest.mark.parametrize(
    "change",
    [
        {"mobile_os": "WINDOWS"},
        {"mobile_os": "ios"},
        {"audience_size": "HUGE"},
        {"placements": []},
        {"placements": "TikTok"},
        {"placements": [1]},
        {"location_ids": []},
        {"location_ids": [6252001]},
        {"include_source": "false"},
        {"include_source": 0},
        {"source_audience_id": 5},
        {"extra": True},
    ],
)
def test_lookalike_spec_is_checked_exactly(fake, aud, change):
    fill(fake, aud, 100)
    assert code(call(fake, "POST", LOOKALIKE, body=lookalike_body(aud, **change))) == 40000
    assert len(fake.audiences()) == 1


def test_lookalike_body_is_checked_exactly(fake, aud):
    fill(fake, aud, 100)
    foreign = fake.add_audience(ADV2, "theirs")
    fill(fake, foreign, 100, advertiser=ADV2)
    spec_missing = lookalike_body(aud)
    del spec_missing["lookalike_spec"]["placements"]
    refused = {
        40000: [
            lookalike_body(aud, name=""),
            lookalike_body(aud, name="x" * 129),
            lookalike_body(aud, name=7),
            spec_missing,
            {**lookalike_body(aud), "action": "create"},
            {k: v for k, v in lookalike_body(aud).items() if k != "lookalike_spec"},
            {**lookalike_body(aud), "lookalike_spec": [aud]},
        ],
        40007: [lookalike_body("7199999999999999999")],
        40001: [lookalike_body(foreign), lookalike_body(aud, advertiser=ADV_NOPE)],
    }
    for expected, bodies in refused.items():
        for body in bodies:
            assert code(call(fake, "POST", LOOKALIKE, body=body)) == expected, body
    assert len(fake.audiences()) == 2
    assert code(call(fake, "POST", LOOKALIKE, body=lookalike_body(aud, name="x" * 128))) == 0


def test_lookalike_create_can_be_answered_without_its_id(fake, aud):
    fill(fake, aud, 100)
    fake.inject(create_without_id_next=1)
    resp = call(fake, "POST", LOOKALIKE, body=lookalike_body(aud))
    assert code(resp) == 0 and "audience_id" not in resp.json()["data"]
    assert [a["type"] for a in fake.audiences()] == ["Partner", "Lookalike"]


# ----------------------------------------------------------------------------- advertisers, oauth


def test_user_info(fake):
    resp = call(fake, "GET", "user/info/")
    assert code(resp) == 0
    assert resp.json()["data"]["display_name"] == "fake user"


def test_advertiser_info(fake):
    params = {"advertiser_ids": json.dumps([ADV, ADV2])}
    resp = call(fake, "GET", "advertiser/info/", params=params)
    assert code(resp) == 0
    assert resp.json()["data"]["list"] == [
        {"advertiser_id": ADV, "name": "Main", "status": "STATUS_ENABLE"},
        {"advertiser_id": ADV2, "name": "Second", "status": "STATUS_ENABLE"},
    ]
    params = {"advertiser_ids": json.dumps([ADV, ADV_NOPE])}
    assert code(call(fake, "GET", "advertiser/info/", params=params)) == 40001
    params = {"advertiser_ids": json.dumps(["7999999999999999999"])}
    assert code(call(fake, "GET", "advertiser/info/", params=params)) == 40300
    assert code(call(fake, "GET", "advertiser/info/", params={"advertiser_ids": ADV})) == 40000


def test_oauth_advertiser_get(fake):
    params = {"app_id": APP, "secret": SECRET}
    resp = call(fake, "GET", "oauth2/advertiser/get/", params=params)
    assert code(resp) == 0
    assert resp.json()["data"]["list"] == [
        {"advertiser_id": ADV, "advertiser_name": "Main"},
        {"advertiser_id": ADV2, "advertiser_name": "Second"},
        {"advertiser_id": ADV_BC2, "advertiser_name": "Other BC"},
    ]
    bad = {"app_id": APP, "secret": "wrong"}
    assert code(call(fake, "GET", "oauth2/advertiser/get/", params=bad)) == 40000
    assert code(call(fake, "GET", "oauth2/advertiser/get/", params=params, token=None)) == 40104


def test_oauth_access_token_is_single_use(fake):
    fake.add_auth_code("code-1", "new-token", [ADV2])
    body = {"app_id": APP, "secret": SECRET, "auth_code": "code-1"}
    assert code(call(fake, "GET", "user/info/", token="new-token")) == 40105

    resp = call(fake, "POST", "oauth2/access_token/", body=body, token=None)
    assert code(resp) == 0
    assert resp.json()["data"]["access_token"] == "new-token"
    assert resp.json()["data"]["advertiser_ids"] == [ADV2]
    assert code(call(fake, "GET", "user/info/", token="new-token")) == 0
    params = {"advertiser_ids": json.dumps([ADV2])}
    assert code(call(fake, "GET", "advertiser/info/", params=params, token="new-token")) == 0

    assert code(call(fake, "POST", "oauth2/access_token/", body=body, token=None)) == 40110
    unknown = {**body, "auth_code": "never-issued"}
    assert code(call(fake, "POST", "oauth2/access_token/", body=unknown, token=None)) == 40110
    fake.add_auth_code("code-2", "t2", [ADV])
    wrong = {"app_id": APP, "secret": "nope", "auth_code": "code-2"}
    assert code(call(fake, "POST", "oauth2/access_token/", body=wrong, token=None)) == 40000
    # a refused attempt does not burn the code
    ok = {**wrong, "secret": SECRET}
    assert code(call(fake, "POST", "oauth2/access_token/", body=ok, token=None)) == 0


# ----------------------------------------------------------------------------- log


def test_requests_log(fake, aud):
    body = mapping(aud, email_rows(aud, 2))
    call(fake, "POST", MAPPING, body=body)
    call(fake, "GET", "user/info/", token="wrong")
    call(fake, "GET", "nothing/here/")
    log = fake.requests_log()
    assert [(e["method"], e["path"], e["code"]) for e in log] == [
        ("POST", MAPPING, 0),
        ("GET", "user/info/", 40105),
        ("GET", "nothing/here/", 404),
    ]
    assert log[0]["body"] == body and log[1]["body"] is None
    assert all(isinstance(e["time"], float) for e in log)
    assert TOKEN not in json.dumps(log) and "wrong" not in json.dumps(log)
    assert len(fake.requests_log(MAPPING)) == 1
    assert fake.requests_log(MAPPING, bodies=False)[0]["body"] is None
    get_audiences(fake, [aud])
    assert fake.requests_log("dmp/custom_audience/get/")[0]["query"] == {
        "advertiser_id": ADV,
        "custom_audience_ids": json.dumps([aud]),
    }
    fake.reset_log()
    assert fake.requests_log() == []


# ----------------------------------------------------------------------------- fault injection


def test_rate_limit(fake, aud):
    fake.inject(rate_limit_per_second=3)
    session = requests.Session()
    codes = []
    for i in range(6):
        resp = session.post(
            fake.url + MAPPING,
            data=json.dumps(mapping(aud, [[entry(sha(f"r{i}"), aud)]])),
            headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
            timeout=5,
        )
        codes.append(code(resp))
    assert codes == [0, 0, 0, 40100, 40100, 40100]
    assert fake.stats["rate_limited"] == 3
    assert fake.members(aud)["EMAIL_SHA256"] == {sha(f"r{i}") for i in range(3)}
    assert code(call(fake, "GET", "user/info/")) == 0  # other paths are not limited
    time.sleep(1.05)
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, [[entry(sha("r9"), aud)]]))) == 0
    assert fake.requests_log(MAPPING)[3]["code"] == 40100


@pytest.mark.parametrize(
    ("kind", "arrivals", "admitted"),
    [
        # 3 at once, then nothing until the second since the first has passed.
        ("sliding", [0.0, 0.0, 0.0, 0.5, 0.999, 1.0, 1.0, 1.0, 1.5], [1, 1, 1, 0, 0, 1, 1, 1, 0]),
        # 3 at once, then one per third of a second as the bucket refills; idle, it fills.
        (
            "bucket",
            [0.0, 0.0, 0.0, 0.0, 0.34, 0.35, 0.68, 5.0, 5.0, 5.0, 5.0],
            [1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0],
        ),
        # 3 late in one second, 3 more as the next begins: 6 within 0.2 s.
        ("second", [4.1, 4.9, 4.9, 4.9, 4.95, 5.0, 5.0, 5.1, 5.1], [1, 1, 1, 0, 0, 1, 1, 1, 0]),
    ],
)
def test_rate_limit_kinds(kind, arrivals, admitted):
    limit = RateLimit(3, kind)
    assert [int(limit.admit(t)) for t in arrivals] == admitted


def test_sliding_is_the_strictest_rate_limit():
    # Arrivals a sliding second admits all pass a bucket and a per-second counter too.
    arrivals = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.5, 2.5, 3.4, 3.6, 3.6]
    for kind in RATE_LIMIT_KINDS:
        limit = RateLimit(3, kind)
        assert all(limit.admit(t) for t in arrivals), kind


@pytest.mark.parametrize("kind", RATE_LIMIT_KINDS)
def test_rate_limit_counts_the_arrivals_the_log_shows(fake, aud, kind, monkeypatch):
    # The fake's clock jumps unevenly at every reading: the limit must judge each request by
    # the time it is logged with, so that a replay of the log refuses exactly what it refused.
    rng = random.Random(7)
    clock = [1000.0]
    real_time = fake_tiktok.time

    def jumpy() -> float:
        clock[0] += rng.uniform(0.0, 0.7)
        return clock[0]

    monkeypatch.setattr(fake_tiktok, "time", types.SimpleNamespace(
        time=jumpy, sleep=real_time.sleep, gmtime=real_time.gmtime, strftime=real_time.strftime
    ))  # fmt: skip
    fake.inject(rate_limit_per_second=2, rate_limit_kind=kind)
    body = mapping(aud, [[entry(sha("j"), aud)]])
    for _ in range(40):
        call(fake, "POST", MAPPING, body=body)
    log = fake.requests_log(MAPPING)
    replay = RateLimit(2, kind)
    assert [entry["code"] == 0 for entry in log] == [replay.admit(e["time"]) for e in log]
    assert 0 < fake.stats["rate_limited"] < 40


def after_a_burst(url: str, token: str, audience_id: str) -> list[int]:
    """Codes of 3 mapping requests at once, then one more 0.55 s later."""
    headers = {"Access-Token": token, "Content-Type": "application/json"}
    body = mapping(audience_id, [[entry(sha("b"), audience_id)]])
    with requests.Session() as session:
        first = [code(session.post(url + MAPPING, json=body, headers=headers)) for _ in range(3)]
        time.sleep(0.55)  # a bucket of 2 at 2/s holds a token again; a sliding second is not over
        return [*first, code(session.post(url + MAPPING, json=body, headers=headers))]


@pytest.mark.parametrize(
    ("kind", "codes"), [(None, [0, 0, 40100, 40100]), ("bucket", [0, 0, 40100, 0])]
)
def test_rate_limit_kind_is_chosen_by_inject(fake, aud, kind, codes):
    fake.inject(rate_limit_per_second=2, **({} if kind is None else {"rate_limit_kind": kind}))
    assert after_a_burst(fake.url, TOKEN, aud) == codes


def test_rate_limit_kind_is_chosen_by_the_script_flag():
    script = Path(__file__).with_name("fake_tiktok.py")
    flags = ["--token", "T", "--advertiser", ADV, "--audience", "crm=888", "--rate-limit", "2"]
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", *flags, "--rate-limit-kind", "bucket"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert after_a_burst(proc.stdout.readline().strip(), "T", "888") == [0, 0, 40100, 0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    refused = subprocess.run(
        [sys.executable, str(script), *flags, "--rate-limit-kind", "leaky"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "invalid choice: 'leaky' (choose from 'sliding', 'bucket', 'second')" in refused.stderr


def test_http_503(fake, aud):
    fake.inject(http_503_rate=1.0)
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 3)))
    assert resp.status_code == 503
    assert fake.members(aud) == {}
    assert fake.stats["http_503"] == 1
    assert fake.requests_log(MAPPING)[-1]["code"] == 503
    fake.inject()
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 3)))) == 0


def _error_sequence(seed):
    with FakeTikTok(seed=seed) as f:
        f.add_advertiser(ADV)
        f.add_token(TOKEN, [ADV])
        aud = f.add_audience(ADV, "a")
        f.inject(error_rate=0.5, error_codes=(50000, 40202))
        codes = []
        for i in range(30):
            body = mapping(aud, [[entry(sha(f"x{i}"), aud)]])
            codes.append(code(call(f, "POST", MAPPING, body=body)))
        ok = {sha(f"x{i}") for i, c in enumerate(codes) if c == 0}
        assert f.members(aud).get("EMAIL_SHA256", set()) == ok  # faulted requests change nothing
        assert f.stats["errors_injected"] == sum(c != 0 for c in codes)
        return codes


def test_error_rate_is_seeded():
    first = _error_sequence(3)
    assert first == _error_sequence(3)
    assert set(first) == {0, 50000, 40202}
    assert first != _error_sequence(4)


def test_error_injection_only_on_selected_paths(fake, aud):
    fake.inject(error_rate=1.0, paths=("user/info/",))
    assert code(call(fake, "GET", "user/info/")) == 50000
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))) == 0


def test_auth_comes_before_faults(fake, aud):
    fake.inject(error_rate=1.0)
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)), token="x")) == (
        40105
    )
    assert fake.stats["errors_injected"] == 0


def test_hang(fake, aud):
    fake.inject(hang_next=1, hang_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 2)), timeout=0.3)
    assert time.monotonic() - started < 0.9
    # the next request answers promptly
    started = time.monotonic()
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1, "q")))) == 0
    assert time.monotonic() - started < 0.5
    assert fake.stats["hangs"] == 1
    # the hung request was applied even though its client gave up
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 3


def test_latency(fake, aud):
    fake.inject(latency=0.25)
    started = time.monotonic()
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))) == 0
    assert time.monotonic() - started >= 0.25
    started = time.monotonic()
    assert code(call(fake, "GET", "user/info/")) == 0
    assert time.monotonic() - started < 0.2


def test_stats_count_requests(fake):
    for _ in range(3):
        call(fake, "GET", "user/info/")
    assert fake.stats["requests"] == 3


# ----------------------------------------------------------------------------- script mode


def test_script_mode():
    script = Path(__file__).with_name("fake_tiktok.py")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--token",
            "T",
            "--advertiser",
            ADV,
            "--audience",
            "crm=888",
            "--max-batch",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/open_api/v1.3/")
        headers = {"Access-Token": "T", "Content-Type": "application/json"}
        body = mapping("888", [[entry(sha("a"), "888")], [entry(sha("b"), "888")]])
        assert code(requests.post(url + MAPPING, json=body, headers=headers, timeout=5)) == 0
        body = mapping("888", [[entry(sha(str(i)), "888")] for i in range(6)])
        assert code(requests.post(url + MAPPING, json=body, headers=headers, timeout=5)) == 40011
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    summary = json.loads(err[err.index('{\n  "stats"') :])
    assert summary["stats"]["requests"] == 2
    assert summary["audiences"]["888"]["members"] == {"EMAIL_SHA256": 2}


def test_stop_cuts_kept_alive_connections_and_restart_keeps_state():
    f = FakeTikTok().start()
    try:
        f.add_advertiser(ADV)
        f.add_token(TOKEN, [ADV])
        aud = f.add_audience(ADV, "kept")
        session = requests.Session()
        url = f.url
        resp = session.post(
            url + MAPPING,
            data=json.dumps(mapping(aud, email_rows(aud, 2))),
            headers={"Access-Token": TOKEN, "Content-Type": "application/json"},
            timeout=5,
        )
        assert code(resp) == 0
        f.stop()
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(url + "user/info/", headers={"Access-Token": TOKEN}, timeout=5)
        f.start()
        assert code(call(f, "GET", "user/info/")) == 0
        assert len(f.members(aud)["EMAIL_SHA256"]) == 2
    finally:
        f.stop()


# ----------------------------------------------------------------------------- network faults


def _raw_answer(fake, body: dict) -> tuple[bytes, bytes]:
    """POST a mapping over a bare socket; return (head, body as far as it came)."""
    payload = json.dumps(body).encode()
    request = (
        f"POST /open_api/v1.3/{MAPPING} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccess-Token: {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.parametrize("knob", ["break_next", "reset_next"])
def test_answer_breaks_off_mid_body_after_the_request_was_carried_out(fake, aud, knob):
    fake.inject(**{knob: 1})
    head, rest = _raw_answer(fake, mapping(aud, email_rows(aud, 2)))
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])
    assert 0 < len(rest) < length  # headers and part of the body, then the connection ended
    assert len(fake.members(aud)["EMAIL_SHA256"]) == 2
    assert fake.stats["broken"] == 1
    fake.inject(**{knob: 1})
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1, "q")))
    fake.inject()
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1, "r")))) == 0


def test_reset_is_a_tcp_reset(fake, aud):
    fake.inject(reset_next=1)
    payload = json.dumps(mapping(aud, email_rows(aud, 1))).encode()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        sock.sendall(
            f"POST /open_api/v1.3/{MAPPING} HTTP/1.1\r\nAccess-Token: {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass


def test_http_429_does_nothing(fake, aud):
    fake.inject(http_429_next=1)
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 2)))
    assert resp.status_code == 429
    assert fake.members(aud) == {}
    assert fake.stats["http_429"] == 1
    assert fake.requests_log(MAPPING)[-1]["code"] == 429
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 2)))) == 0


def test_dribbled_answer_arrives_a_byte_at_a_time(fake, aud):
    fake.inject(dribble_next=1, dribble_seconds=0.005)
    started = time.monotonic()
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))
    took = time.monotonic() - started
    assert code(resp) == 0
    assert resp.elapsed.total_seconds() > 0.005 * 100  # the head trickled in too
    assert took >= 0.005 * (100 + len(resp.content)) * 0.9
    assert fake.stats["dribbled"] == 1
    # Only the body: the head comes at once; each byte comes well within a read timeout that
    # the whole answer overruns.
    fake.inject(dribble_next=1, dribble_seconds=0.02, dribble_head=False)
    started = time.monotonic()
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)), timeout=0.5)
    assert resp.elapsed.total_seconds() < 0.5
    assert time.monotonic() - started > 0.5


def test_create_answered_without_an_id_still_creates(fake):
    fake.inject(create_without_id_next=1)
    body = {"advertiser_id": ADV, "action": "create", "custom_audience_name": "Lost id"}
    resp = call(fake, "POST", "segment/audience/", body=body)
    assert code(resp) == 0
    assert "audience_id" not in resp.json()["data"]
    assert [a["name"] for a in fake.audiences()] == ["Lost id"]
    assert fake.stats["created_without_id"] == 1
    again = call(fake, "POST", "segment/audience/", body=body)
    assert again.json()["data"]["audience_id"]


def test_partial_success_applies_part_of_the_batch(fake, aud):
    fake.inject(partial_next=1)
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 4)))
    assert code(resp) == 20001
    assert resp.json()["message"] == "Partial success"
    assert fake.members(aud)["EMAIL_SHA256"] == {sha(f"p{i}@example.com") for i in range(2)}
    assert fake.stats["partial"] == 1
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 4)))) == 0


def test_busy_audience_is_40002_and_does_nothing(fake, aud):
    fake.inject(busy_next=1)
    resp = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 2)))
    assert code(resp) == 40002
    assert "busy" in resp.json()["message"]
    assert fake.members(aud) == {}
    fake.inject(error_rate=1.0, error_codes=(40002,))
    other = call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 2)))
    assert code(other) == 40002
    assert "busy" not in other.json()["message"].lower()


def test_deleted_audience_answers_40007_everywhere(fake, aud):
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))) == 0
    fake.delete_audience(aud)
    assert code(call(fake, "POST", MAPPING, body=mapping(aud, email_rows(aud, 1)))) == 40007
    params = {"advertiser_id": ADV, "custom_audience_ids": json.dumps([aud])}
    assert code(call(fake, "GET", "dmp/custom_audience/get/", params=params)) == 40007
    listed = call(fake, "GET", "dmp/custom_audience/list/", params={"advertiser_id": ADV})
    assert listed.json()["data"]["list"] == []
