"""TikTokClient against requests-mock: envelope, retries, splitting, parallel sends, pacing."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import itertools
import json
import threading
import time
import traceback

import pytest
import requests
import requests_mock as rm
import urllib3

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.identifiers import SLOTS
from target_tiktok_audiences.tiktok.answers import RequestIds
from target_tiktok_audiences.tiktok.codes import describe_code, is_retryable_code
from target_tiktok_audiences.tiktok.dry_run import DryRunClient
from target_tiktok_audiences.tiktok.http import PARALLEL_BODY_ROWS, TikTokClient
from target_tiktok_audiences.tiktok.mapping import Batch, mapping_body
from target_tiktok_audiences.tiktok.pacing import MARGIN, Pacer
from target_tiktok_audiences.workers import Workers
from tests.conftest import client_options
from tests.fake_tiktok import FakeTikTok

API = "https://business-api.tiktok.com/open_api/v1.3/"
MAPPING = API + "segment/mapping/"
AUDIENCE_URL = API + "segment/audience/"
TOKEN = "tok-3c1f9a77e2b04d5e8a6b"  # a fake token
ADVERTISER = "7000000000000000001"
AUDIENCE = "1790000000000000888"
N = len(SLOTS)
SLOT = {name: i for i, name in enumerate(SLOTS)}


def ok(data=None):
    return {"code": 0, "message": "OK", "request_id": "req-ok", "data": data or {}}


def fail(code, message="something went wrong"):
    return {"code": code, "message": message, "request_id": f"req-{code}", "data": {}}


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def row(email=None, phone=None):
    out = [None] * N
    if email is not None:
        out[SLOT["EMAIL_SHA256"]] = digest(email)
    if phone is not None:
        out[SLOT["PHONE_SHA256"]] = digest(phone)
    return tuple(out)


ROWS = [
    row(email=f"p{i}@example.com", phone=f"+1415555{i:04d}" if i % 2 else None) for i in range(10)
]


def make_client(api_url=API, access_token=TOKEN, workers=None, **changes):
    options = {"backoff_base": 0.001, "max_requests_per_second": 1e6, "max_retries": 3, **changes}
    return TikTokClient(api_url, access_token, client_options(**options), workers=workers)


@pytest.fixture
def client():
    c = make_client()
    yield c
    c.close()


def sent_ids(request) -> set[str]:
    return {cell["id"] for r in request.json()["batch_data"] for cell in r if cell}


# Success and what is sent


def test_success_returns_data_and_sends_headers_and_json(requests_mock, client):
    requests_mock.post(AUDIENCE_URL, json=ok({"audience_id": "888"}))
    body = {"advertiser_id": ADVERTISER, "action": "create", "custom_audience_name": "Customers"}
    assert client.request("POST", "segment/audience/", body=body) == {"audience_id": "888"}
    assert requests_mock.call_count == 1
    sent = requests_mock.request_history[0]
    assert sent.method == "POST"
    assert sent.url == AUDIENCE_URL
    assert sent.headers["Access-Token"] == TOKEN
    assert sent.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sent.headers
    assert sent.json() == body
    assert client.requests_sent == 1


def test_get_sends_params_and_returns_data(requests_mock, client):
    url = API + "dmp/custom_audience/get/"
    requests_mock.get(url, json=ok({"list": [{"audience_details": {"audience_id": "888"}}]}))
    ids = json.dumps(["888"])
    data = client.request(
        "GET",
        "dmp/custom_audience/get/",
        params={"advertiser_id": ADVERTISER, "custom_audience_ids": ids},
    )
    assert data["list"][0]["audience_details"]["audience_id"] == "888"
    sent = requests_mock.request_history[0]
    assert sent.qs["custom_audience_ids"] == [ids.lower()]
    assert sent.headers["Access-Token"] == TOKEN


def test_missing_or_odd_data_is_an_empty_dict(requests_mock, client):
    requests_mock.get(
        API + "user/info/",
        [
            {"json": {"code": 0, "message": "OK", "request_id": "r"}},
            {"json": {"code": 0, "message": "OK", "request_id": "r", "data": None}},
            {"json": {"code": "0", "message": "OK", "data": {"x": 1}}},
        ],
    )
    assert client.request("GET", "user/info/") == {}
    assert client.request("GET", "user/info/") == {}
    assert client.request("GET", "user/info/") == {"x": 1}


@pytest.mark.parametrize("api_url", [API, API.rstrip("/")])
def test_path_is_joined_to_api_url_keeping_trailing_slash(requests_mock, api_url):
    requests_mock.post(MAPPING, json=ok())
    c = make_client(api_url)
    assert c.api_url == API
    c.request("POST", "segment/mapping/", body={})
    assert requests_mock.request_history[0].url == MAPPING
    assert requests_mock.request_history[0].path.endswith("/segment/mapping/")
    c.close()


def test_no_token_no_header(requests_mock):
    requests_mock.get(API + "user/info/", json=fail(40104))
    c = make_client(access_token=None)
    with pytest.raises(TikTokAPIError) as info:
        c.request("GET", "user/info/")
    assert "Access-Token" not in requests_mock.request_history[0].headers
    assert "access_token" in str(info.value)
    c.close()


# Error codes


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (40105, ["40105", "tiktok-audiences auth", "access_token"]),
        (40102, ["40102", "tiktok-audiences auth"]),
        (40001, ["40001", "advertiser", "permission"]),
        (40007, ["40007", "audience_id"]),
        (40062, ["40062", "bug"]),
        (40300, ["40300", "advertiser_ids"]),
    ],
)
def test_non_zero_code_raises_with_code_and_fix(requests_mock, client, code, words):
    requests_mock.post(MAPPING, json=fail(code, "tiktok says no"))
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={"x": 1})
    exc = info.value
    assert exc.code == code
    assert exc.path == "segment/mapping/"
    assert exc.request_id == f"req-{code}"
    assert exc.retryable is False
    message = str(exc)
    for word in words:
        assert word in message
    assert "tiktok says no" in message
    assert "\n" not in message


NON_RETRYABLE = [
    20001,
    40000,
    40001,
    40002,
    40007,
    40011,
    40061,
    40062,
    40102,
    40104,
    40105,
    40110,
    40300,
]
RETRYABLE = [
    40100,
    40133,
    40016,
    40132,
    61000,
    40202,
    50000,
    50002,
    51000,
    51004,
    51999,
    52000,
    52001,
    60001,
]


@pytest.mark.parametrize("code", NON_RETRYABLE)
def test_non_retryable_codes_are_sent_once(requests_mock, client, code):
    requests_mock.post(MAPPING, [{"json": fail(code)}, {"json": ok()}])
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert info.value.code == code
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("code", RETRYABLE)
def test_retryable_codes_are_retried_until_success(requests_mock, client, code):
    requests_mock.post(
        MAPPING, [{"json": fail(code)}, {"json": fail(code)}, {"json": ok({"done": True})}]
    )
    assert client.request("POST", "segment/mapping/", body={}) == {"done": True}
    assert requests_mock.call_count == 3
    assert client.requests_sent == 3


@pytest.mark.parametrize(
    "response",
    [
        {"status_code": 503, "text": "Service Unavailable"},
        {"status_code": 502, "text": "<html>bad gateway</html>"},
        {"status_code": 200, "text": "<html>not json</html>"},
        {"exc": requests.exceptions.ConnectTimeout},
        {"exc": requests.exceptions.ReadTimeout},
    ],
    ids=["http503", "http502", "not-json", "connect-timeout", "read-timeout"],
)
def test_transport_failures_are_retried(requests_mock, client, response):
    requests_mock.post(MAPPING, [response, {"json": ok({"n": 1})}])
    assert client.request("POST", "segment/mapping/", body={}) == {"n": 1}
    assert requests_mock.call_count == 2


def test_connection_error_after_tiktok_answered_once_is_retried(requests_mock, client):
    requests_mock.get(API + "user/info/", json=ok())
    requests_mock.post(
        MAPPING,
        [
            {"exc": requests.exceptions.ConnectionError},
            {"exc": requests.exceptions.ConnectionError},
            {"json": ok({"n": 1})},
        ],
    )
    client.request("GET", "user/info/")
    assert client.request("POST", "segment/mapping/", body={}) == {"n": 1}
    assert requests_mock.call_count == 4


def test_connection_refused_before_any_answer_fails_at_once(requests_mock, client):
    # A first connection that fails is a wrong `api_url` or no network, not a blip.
    requests_mock.post(MAPPING, [{"exc": requests.exceptions.ConnectionError}, {"json": ok()}])
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1
    assert "api_url" in str(info.value)


@pytest.mark.parametrize(
    ("response", "words"),
    [
        ({"status_code": 503}, ["503", "server"]),
        ({"exc": requests.exceptions.ConnectTimeout}, ["request_timeout"]),
        ({"exc": requests.exceptions.ReadTimeout}, ["request_timeout"]),
        ({"json": fail(50002)}, ["50002", "re-run later"]),
        ({"json": fail(40100)}, ["40100", "max_requests_per_second"]),
    ],
)
def test_after_max_retries_the_error_is_raised(requests_mock, response, words):
    requests_mock.post(MAPPING, [response] * 5 + [{"json": ok()}])
    c = make_client(max_retries=2)
    with pytest.raises(TikTokAPIError) as info:
        c.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 3  # max_retries + 1 attempts
    for word in words:
        assert word in str(info.value)
    c.close()


def test_connection_error_after_max_retries_is_raised(requests_mock):
    requests_mock.get(API + "user/info/", json=ok())
    requests_mock.post(MAPPING, [{"exc": requests.exceptions.ConnectionError}] * 5)
    c = make_client(max_retries=2)
    c.request("GET", "user/info/")
    with pytest.raises(TikTokAPIError) as info:
        c.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1 + 3
    assert "api_url" in str(info.value)
    c.close()


def test_max_retries_zero_means_one_attempt(requests_mock):
    requests_mock.post(MAPPING, [{"json": fail(50000)}, {"json": ok()}])
    c = make_client(max_retries=0)
    with pytest.raises(TikTokAPIError):
        c.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1
    c.close()


@pytest.mark.parametrize("status", [400, 404, 405])
def test_http_4xx_is_a_wrong_path_and_not_retried(requests_mock, client, status):
    requests_mock.post(MAPPING, status_code=status, text="nope")
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1
    assert str(status) in str(info.value)
    assert "api_url" in str(info.value)


# Nothing secret in errors


def secret_body():
    rows = [row(email="alice@example.com", phone="+14155550100"), row(email="bob@example.com")]
    return mapping_body("add", [ADVERTISER], AUDIENCE, rows), rows


def secrets(rows):
    hexes = [h.hex() for r in rows for h in r if h is not None]
    return [TOKEN, AUDIENCE, *hexes, *(h[:16] for h in hexes)]


@pytest.mark.parametrize(
    "response",
    [
        {"json": fail(40001, "No permission to operate")},
        {"json": fail(40062, "PII not hashed")},
        {"json": fail(50000, "System error")},
        {"status_code": 500, "text": f"boom {TOKEN}"},
        {"status_code": 404, "text": f"not found {TOKEN}"},
        {"text": f"not json {TOKEN}"},
        {"exc": requests.exceptions.ConnectionError(f"pool {MAPPING}?token={TOKEN}")},
        {"exc": requests.exceptions.ReadTimeout(f"read timed out {TOKEN}")},
    ],
    ids=["40001", "40062", "50000", "http500", "http404", "not-json", "connection", "timeout"],
)
def test_errors_never_carry_token_or_body(requests_mock, response):
    requests_mock.post(MAPPING, [response] * 3)
    body, rows = secret_body()
    c = make_client(max_retries=1)
    with pytest.raises(TikTokAPIError) as info:
        c.request("POST", "segment/mapping/", body=body)
    exc = info.value
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    shown = "".join(traceback.format_exception(exc)) + str(exc) + repr(exc) + repr(exc.args)
    for secret in secrets(rows):
        assert secret not in shown
    c.close()


def test_retry_logs_carry_no_secret(requests_mock, caplog):
    requests_mock.post(MAPPING, [{"json": fail(50000)}, {"json": ok()}])
    body, rows = secret_body()
    c = make_client()
    with caplog.at_level("DEBUG", logger="target_tiktok_audiences"):
        c.request("POST", "segment/mapping/", body=body)
    assert "retry 1 of 3" in caplog.text
    for secret in secrets(rows):
        assert secret not in caplog.text
    c.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_to_another_host_never_receives_the_token(requests_mock, client, status):
    elsewhere = "https://elsewhere.example.net/collect"
    requests_mock.post(MAPPING, status_code=status, headers={"Location": elsewhere})
    requests_mock.register_uri(rm.ANY, elsewhere, json=ok())
    body, _ = secret_body()
    with contextlib.suppress(TikTokAPIError):
        client.request("POST", "segment/mapping/", body=body)
    leaked = [
        r
        for r in requests_mock.request_history
        if r.hostname != "business-api.tiktok.com" and r.headers.get("Access-Token")
    ]
    assert leaked == []


# Requests that must not run twice


@pytest.mark.parametrize(
    "response",
    [
        {"exc": requests.exceptions.ReadTimeout},
        {"exc": requests.exceptions.ConnectTimeout},
        {"exc": requests.exceptions.ConnectionError},
        {"status_code": 503},
        {"json": fail(50000)},
        {"json": fail(40202)},
    ],
    ids=["read-timeout", "connect-timeout", "connection", "http503", "50000", "40202"],
)
def test_non_idempotent_request_is_not_retried_after_possible_effect(
    requests_mock, client, response
):
    requests_mock.post(AUDIENCE_URL, [response, {"json": ok({"audience_id": "2"})}])
    with pytest.raises(TikTokAPIError):
        client.request("POST", "segment/audience/", body={"action": "create"}, idempotent=False)
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("code", [40100, 40133, 40016, 40132, 61000])
def test_non_idempotent_request_is_retried_after_rate_limit(requests_mock, client, code):
    requests_mock.post(AUDIENCE_URL, [{"json": fail(code)}, {"json": ok({"audience_id": "2"})}])
    data = client.request("POST", "segment/audience/", body={"action": "create"}, idempotent=False)
    assert data == {"audience_id": "2"}
    assert requests_mock.call_count == 2


# Backoff


def test_backoff_grows_and_a_persistent_rate_limit_waits_minutes():
    c = make_client(backoff_base=1.0)
    first = [c._backoff(1, 0) for _ in range(50)]
    assert all(0.5 <= d <= 1.5 for d in first)
    assert all(1.0 <= c._backoff(2, 0) <= 3.0 for _ in range(50))
    assert c._backoff(20, 0) <= 120.0
    assert c._backoff(3, 3) == 60.0
    assert c._backoff(8, 8) == 300.0
    c.close()


# map_batch


def test_map_batch_sends_an_aligned_body(requests_mock, client):
    requests_mock.post(MAPPING, json=ok())
    client.map_batch("add", [ADVERTISER], AUDIENCE, Batch.of(ROWS[:3]))
    assert requests_mock.call_count == 1
    assert requests_mock.request_history[0].json() == mapping_body(
        "add", [ADVERTISER], AUDIENCE, ROWS[:3]
    )
    body = requests_mock.request_history[0].json()
    assert body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256"]
    assert body["batch_data"][0][1] == {}


@pytest.mark.parametrize("code", [40011, 40061])
def test_map_batch_halves_on_too_large(requests_mock, code):
    c = make_client(batch_size=10)

    def answer(request, context):
        n = len(requests_mock.request_history)
        answered = fail(code) if len(request.json()["batch_data"]) > 3 else ok()
        return {**answered, "request_id": f"req-{n}"}

    requests_mock.post(MAPPING, json=answer)
    request_ids = c.map_batch("delete", [ADVERTISER], AUDIENCE, Batch.of(ROWS))
    sizes = [len(r.json()["batch_data"]) for r in requests_mock.request_history]
    # 10 -> 5 + 5 -> (3 + 2) + (3 + 2)
    assert sizes == [10, 5, 3, 2, 5, 3, 2]
    # One request id per request TikTok accepted, in send order; none of the refused ones.
    assert request_ids == ("req-3", "req-4", "req-6", "req-7")
    assert request_ids.rows == (3, 2, 3, 2)
    delivered = [r for r in requests_mock.request_history if len(r.json()["batch_data"]) <= 3]
    assert sorted(i for r in delivered for i in sent_ids(r)) == sorted(
        h.hex() for r in ROWS for h in r if h is not None
    )
    assert all(r.json()["action"] == "delete" for r in requests_mock.request_history)
    assert c.batch_size == 3
    # It stays shrunk after a success.
    requests_mock.post(MAPPING, json=ok())
    c.map_batch("add", [ADVERTISER], AUDIENCE, Batch.of(ROWS[:2]))
    assert c.batch_size == 3
    c.close()


def test_a_batch_read_from_its_source_is_read_only_to_be_halved(requests_mock):
    """A batch whose body was built elsewhere is read here only when TikTok wants halves."""
    c = make_client(batch_size=10)
    reads = []

    def source(first, last):
        reads.append((first, last))
        return ROWS

    requests_mock.post(MAPPING, [{"json": fail(40011)}, {"json": ok()}, {"json": ok()}])
    batch = Batch(7, 20, len(ROWS), source=source)
    body = json.dumps(mapping_body("add", [ADVERTISER], AUDIENCE, ROWS)).encode()
    c.map_batch("add", [ADVERTISER], AUDIENCE, batch, body)
    assert reads == [(7, 20)]
    sent = [r.json() for r in requests_mock.request_history]
    assert [len(b["batch_data"]) for b in sent] == [10, 5, 5]
    assert sent[1:] == [
        mapping_body("add", [ADVERTISER], AUDIENCE, ROWS[:5]),
        mapping_body("add", [ADVERTISER], AUDIENCE, ROWS[5:]),
    ]
    c.close()


def test_map_batch_does_not_grow_a_smaller_batch_size(requests_mock):
    c = make_client(batch_size=2)
    requests_mock.post(MAPPING, [{"json": fail(40011)}, {"json": ok()}, {"json": ok()}])
    c.map_batch("add", [ADVERTISER], AUDIENCE, Batch.of(ROWS[:8]))
    assert c.batch_size == 2
    c.close()


def test_single_row_batch_still_too_large_raises(requests_mock, client):
    requests_mock.post(MAPPING, json=fail(40011))
    with pytest.raises(TikTokAPIError) as info:
        client.map_batch("add", [ADVERTISER], AUDIENCE, Batch.of(ROWS[:4]))
    assert info.value.code == 40011
    sizes = [len(r.json()["batch_data"]) for r in requests_mock.request_history]
    assert sizes == [4, 2, 1]
    assert client.batch_size == 1


def test_map_batch_other_errors_are_not_split(requests_mock, client):
    requests_mock.post(MAPPING, json=fail(40001))
    with pytest.raises(TikTokAPIError) as info:
        client.map_batch("add", [ADVERTISER], AUDIENCE, Batch.of(ROWS))
    assert info.value.code == 40001
    assert requests_mock.call_count == 1
    assert client.batch_size == 10000


# map_all


def batches_of(n, size=1):
    """n batches of `size` people each, batch i holding plan seqs 100 i to 100 i + size - 1."""
    rows = [row(email=f"batch{i}-{j}@example.com") for i in range(n) for j in range(size)]
    return [
        Batch(100 * i, 100 * i + size - 1, size, rows=rows[i * size : (i + 1) * size])
        for i in range(n)
    ]


def batch_index(request) -> int:
    first = request.json()["batch_data"][0][0]["id"]
    for i in range(100):
        if digest(f"batch{i}-0@example.com").hex() == first:
            return i
    raise AssertionError("unknown batch")


def test_map_all_sends_every_batch_once_and_confirms_in_calling_thread(requests_mock):
    c = make_client(max_parallel_requests=3)
    requests_mock.post(
        MAPPING,
        json=lambda request, context: {**ok(), "request_id": f"req-batch{batch_index(request)}"},
    )
    confirmed = []
    threads = set()

    def on_confirmed(batch, request_ids):
        threads.add(threading.get_ident())
        confirmed.append((batch.first, request_ids))

    batches = batches_of(10, size=2)
    c.map_all("add", [ADVERTISER], AUDIENCE, iter(batches), on_confirmed)
    assert sorted(batch_index(r) for r in requests_mock.request_history) == list(range(10))
    # Each batch is confirmed with the request id of the answer to its own request.
    assert sorted(confirmed) == [(b.first, (f"req-batch{i}",)) for i, b in enumerate(batches)]
    assert threads == {threading.get_ident()}
    c.close()


def test_map_all_keeps_max_parallel_requests_in_flight(monkeypatch):
    # requests-mock serialises sends behind one lock, so parallelism is watched at map_batch.
    c = make_client(max_parallel_requests=3)
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "threads": set()}

    def fake_map_batch(action, advertiser_ids, audience_id, batch, body=None):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            state["threads"].add(threading.get_ident())
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return RequestIds([("req", batch.size)])

    monkeypatch.setattr(c, "map_batch", fake_map_batch)
    confirmed = []
    c.map_all("add", [ADVERTISER], AUDIENCE, batches_of(10), lambda b, ids: confirmed.append(b))
    assert len(confirmed) == 10
    assert state["max"] == 3
    assert threading.get_ident() not in state["threads"]
    c.close()


def test_map_all_raises_first_failure_and_stops(requests_mock):
    c = make_client(max_parallel_requests=3)

    def answer(request, context):
        if batch_index(request) == 1:
            return fail(40001, "no permission")
        time.sleep(0.05)
        return ok()

    requests_mock.post(MAPPING, json=answer)
    confirmed = []
    batches = batches_of(10)
    with pytest.raises(TikTokAPIError) as info:
        c.map_all("add", [ADVERTISER], AUDIENCE, batches, lambda b, ids: confirmed.append(b.first))
    assert info.value.code == 40001
    sent = sorted(batch_index(r) for r in requests_mock.request_history)
    assert len(sent) < 10
    assert sent.count(1) == 1
    # Every batch that TikTok confirmed was recorded, the failed one was not.
    assert sorted(confirmed) == sorted(100 * i for i in sent if i != 1)
    c.close()


def test_map_all_submits_nothing_after_a_finished_failure(requests_mock):
    c = make_client(max_parallel_requests=4)
    requests_mock.post(MAPPING, json=fail(40001))

    def slow_batches():
        for batch in batches_of(6):
            yield batch
            time.sleep(0.05)  # e.g. reading a large plan from the store

    with pytest.raises(TikTokAPIError):
        c.map_all("add", [ADVERTISER], AUDIENCE, slow_batches(), lambda b, ids: None)
    assert requests_mock.call_count == 1
    c.close()


def test_map_all_with_no_batches_sends_nothing(requests_mock, client):
    client.map_all("add", [ADVERTISER], AUDIENCE, iter([]), lambda b, ids: None)
    assert requests_mock.call_count == 0


# Pacer


class VirtualClock:
    """A clock that moves only when a thread sleeps; the n-th sleep ends `late[n % len(late)]` late.

    Each thread's time is the latest it read or woke at: after `Pacer.wait` returns, that is
    the moment the pacer let it go (`released`). A sleep moves the clock to the sleeper's end of
    sleep if that is later, so threads that sleep together wake, as on a busy machine, at the
    time the latest of them asked for.
    """

    NOW = 1000.0

    def __init__(self, late: tuple[float, ...] = (0.0,)) -> None:
        self.now = self.NOW
        self._late = itertools.cycle(late)
        self._seen: dict[int, float] = {}
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._seen[threading.get_ident()] = self.now
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            woke = self._seen[threading.get_ident()] + seconds + next(self._late)
            self.now = max(self.now, woke)
            self._seen[threading.get_ident()] = woke

    def released(self) -> float:
        """This thread's time: after `Pacer.wait`, the moment it was let go."""
        with self._lock:
            return self._seen[threading.get_ident()]


def pace(pacer: Pacer, clock: VirtualClock, threads: int, calls: int) -> list[float]:
    """Every start `threads` threads were given, `calls` each, in time order."""
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(calls):
            pacer.wait()
            with lock:
                starts.append(clock.released())

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return sorted(starts)


def test_pacer_lets_a_seconds_whole_allowance_go_at_once():
    clock = VirtualClock()
    starts = pace(Pacer(10, clock=clock, sleep=clock.sleep), clock, threads=4, calls=10)
    # Ten at once, then ten more one second (and the margin) after those: no even spacing.
    span = 1.0 + MARGIN
    assert starts == pytest.approx([VirtualClock.NOW + (k // 10) * span for k in range(40)])


@pytest.mark.parametrize(
    ("rate", "allowance", "window"),
    [(10, 10, 1.0), (2.5, 2, 1.0), (1, 1, 1.0), (0.5, 1, 2.0), (0.3, 1, 1 / 0.3)],
)
def test_pacer_uses_the_whole_allowance_of_any_rate(rate, allowance, window):
    clock = VirtualClock()
    starts = pace(Pacer(rate, clock=clock, sleep=clock.sleep), clock, threads=4, calls=3)
    # 2.5/s: a sliding second that may hold 2.5 starts holds 2; below 1/s, one start per
    # 1/rate seconds.
    span = window + MARGIN
    assert starts == pytest.approx([VirtualClock.NOW + (k // allowance) * span for k in range(12)])


@pytest.mark.parametrize("rate", [10, 2.5, 0.5])
def test_pacer_never_starts_more_than_rate_in_any_sliding_second_when_threads_oversleep(rate):
    # Some sleeps end 0.3 s late, others on time: a start is when the pacer let the thread go,
    # so whoever was late pushes the starts after it later, never closer to it.
    clock = VirtualClock(late=(0.3, 0.0, 0.0))
    starts = pace(Pacer(rate, clock=clock, sleep=clock.sleep), clock, threads=8, calls=6)
    allowance, window = max(1, int(rate)), max(1.0, 1 / rate)
    assert len(starts) == 48
    assert all(
        b - a >= window + MARGIN - 1e-9 for a, b in zip(starts, starts[allowance:], strict=False)
    )
    assert starts[allowance - 1] == VirtualClock.NOW  # the first allowance at once


def test_a_refused_start_holds_every_start_for_a_whole_window():
    clock = VirtualClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    pacer.wait()  # one start of the ten the second allows
    clock.now += 0.2
    pacer.refused()  # TikTok counts fewer: nothing starts before its second has cleared
    starts = pace(pacer, clock, threads=4, calls=5)
    span = 1.0 + MARGIN
    assert starts == pytest.approx(
        [VirtualClock.NOW + 0.2 + (1 + k // 10) * span for k in range(20)]
    )


def test_pacer_really_waits():
    pacer = Pacer(4)
    times: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2):
            pacer.wait()
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times.sort()
    # The second four cannot return before a second and the margin after the first four (a
    # busy machine only makes returns later, so only lower bounds are checked here).
    assert len(times) == 8
    assert all(t >= started + (k // 4) * (1.0 + MARGIN) - 1e-6 for k, t in enumerate(times))


def test_client_requests_are_paced(requests_mock):
    requests_mock.post(MAPPING, json=ok())
    c = make_client(max_requests_per_second=2)
    started = time.monotonic()
    for _ in range(3):
        c.request("POST", "segment/mapping/", body={})
    # Two at once, the third a second (and the margin) after the first.
    assert time.monotonic() - started >= 1.0 + MARGIN - 0.002
    c.close()


# Dry run


def test_dry_run_writes_requests_and_sends_nothing(requests_mock):
    out = io.StringIO()
    c = DryRunClient(out, API, None, client_options(batch_size=5000))
    body = {"advertiser_id": ADVERTISER, "action": "create", "custom_audience_name": "Customers"}
    created = c.request("POST", "segment/audience/", body=body, idempotent=False)
    assert created == {"audience_id": "dry-run:Customers"}
    c.map_batch("add", [ADVERTISER], "dry-run:Customers", Batch.of(ROWS[:2]))
    params = {"advertiser_id": ADVERTISER, "custom_audience_ids": '["888"]'}
    assert c.request("GET", "dmp/custom_audience/get/", params=params) == {}
    assert requests_mock.call_count == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {"method": "POST", "path": "segment/audience/", "body": body},
        {
            "method": "POST",
            "path": "segment/mapping/",
            "body": mapping_body("add", [ADVERTISER], "dry-run:Customers", ROWS[:2]),
        },
        {"method": "GET", "path": "dmp/custom_audience/get/", "body": params},
    ]
    assert all(set(line) == {"method", "path", "body"} for line in lines)
    assert c.requests_sent == 3
    c.close()
    assert out.closed


def test_dry_run_map_all_writes_every_batch(requests_mock):
    out = io.StringIO()
    c = DryRunClient(out, API, None, client_options(max_parallel_requests=8))
    confirmed = []
    c.map_all("delete", [ADVERTISER], AUDIENCE, batches_of(5), lambda b, ids: confirmed.append(ids))
    # A dry run's request ids count the requests it wrote.
    assert confirmed == [(f"dry-run:{n}",) for n in range(1, 6)]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["body"]["action"] for line in lines] == ["delete"] * 5
    assert requests_mock.call_count == 0


def test_bodies_built_in_worker_processes_are_the_inline_bodies(requests_mock):
    """Batches of PARALLEL_BODY_ROWS or more get their bodies from a worker process."""
    batches = batches_of(3, size=PARALLEL_BODY_ROWS)
    shorter = batches[1].rows[:-1]
    batches[1] = Batch(100, 100 + len(shorter) - 1, len(shorter), rows=shorter)  # stays inline
    expected = [mapping_body("add", [ADVERTISER], AUDIENCE, b.rows) for b in batches]
    workers = Workers(2)
    try:
        requests_mock.post(MAPPING, json=ok())
        c = make_client(max_parallel_requests=1, workers=workers)
        c.map_all("add", [ADVERTISER], AUDIENCE, iter(batches), lambda b, ids: None)
        assert [r.json() for r in requests_mock.request_history] == expected
        out = io.StringIO()
        dry = DryRunClient(out, API, None, client_options(), workers=workers)
        dry.map_all("add", [ADVERTISER], AUDIENCE, iter(batches), lambda b, ids: None)
        lines = out.getvalue().splitlines()
        assert [json.loads(line)["body"] for line in lines] == expected
        inline = io.StringIO()
        DryRunClient(inline, API, None, client_options()).map_all(
            "add", [ADVERTISER], AUDIENCE, iter(batches), lambda b, ids: None
        )
        assert inline.getvalue().splitlines() == lines  # byte for byte
    finally:
        workers.close()


# The codes table of tiktok-api.md


CODES_TABLE = {
    20001: False,
    40000: False,
    40002: False,
    40001: False,
    40007: False,
    40011: False,  # split the batch, not a retry: map_batch handles it
    40061: False,
    40062: False,
    40100: True,
    40133: True,
    40016: True,
    40132: True,
    61000: True,
    40102: False,
    40104: False,
    40105: False,
    40110: False,
    40202: True,
    40300: False,
    50000: True,
    50002: True,
    51000: True,
    51234: True,
    51999: True,
    52000: True,
    52999: True,
    60001: True,
}


@pytest.mark.parametrize(("code", "retryable"), sorted(CODES_TABLE.items()))
def test_is_retryable_code_follows_the_table(code, retryable):
    assert is_retryable_code(code) is retryable


@pytest.mark.parametrize("code", sorted(CODES_TABLE))
def test_describe_code_names_code_and_a_fix(code):
    text = describe_code(code, "tiktok's words")
    assert str(code) in text
    assert "tiktok's words" in text
    assert "; " in text  # cause; fix
    assert len(text.split("; ", 1)[1]) > 10
    assert "\n" not in text
    assert describe_code(code, "") == text.replace(": tiktok's words", "")


@pytest.mark.parametrize(
    ("code", "word"),
    [
        (40105, "tiktok-audiences auth"),
        (40102, "tiktok-audiences auth"),
        (40104, "access_token"),
        (40001, "advertiser"),
        (40001, "permission"),
        (40007, "audience_id"),
        (40062, "bug"),
        (40110, "auth code"),
        (40300, "advertiser_ids"),
        (40100, "max_requests_per_second"),
        (61000, "max_retries"),
        (50000, "re-run later"),
        (52001, "re-run later"),
    ],
)
def test_describe_code_fixes(code, word):
    assert word in describe_code(code, "")


# Faults of the network and of TikTok's gateways


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.IncompleteRead(10, 20),
    ],
    ids=["chunked", "decoding", "protocol", "incomplete-read"],
)
def test_answer_broken_mid_body_is_retried(requests_mock, client, exc):
    requests_mock.get(API + "user/info/", json=ok())
    requests_mock.post(MAPPING, [{"exc": exc}, {"json": ok({"n": 1})}])
    client.request("GET", "user/info/")
    assert client.request("POST", "segment/mapping/", body={}) == {"n": 1}
    assert requests_mock.call_count == 3


def test_answer_broken_mid_body_fails_with_our_words_after_max_retries(requests_mock):
    requests_mock.get(API + "user/info/", json=ok())
    broken = requests.exceptions.ChunkedEncodingError(f"Connection broken {TOKEN}")
    requests_mock.post(MAPPING, [{"exc": broken}] * 3)
    c = make_client(max_retries=1)
    c.request("GET", "user/info/")
    with pytest.raises(TikTokAPIError) as info:
        c.request("POST", "segment/mapping/", body={})
    assert str(info.value) == (
        "TikTok's answer to segment/mapping/ broke off mid-way (ChunkedEncodingError): a network "
        "or server fault; re-run later if this persists"
    )
    assert info.value.__suppress_context__
    assert TOKEN not in "".join(traceback.format_exception(info.value))
    c.close()


def test_create_is_not_retried_after_a_broken_answer(requests_mock, client):
    requests_mock.get(API + "user/info/", json=ok())
    requests_mock.post(
        AUDIENCE_URL,
        [{"exc": requests.exceptions.ChunkedEncodingError}, {"json": ok({"audience_id": "2"})}],
    )
    client.request("GET", "user/info/")
    with pytest.raises(TikTokAPIError):
        client.request("POST", "segment/audience/", body={"action": "create"}, idempotent=False)
    assert requests_mock.call_count == 2


def test_http_429_backs_off_as_a_rate_limit(requests_mock, monkeypatch):
    requests_mock.post(MAPPING, [{"status_code": 429}] * 3 + [{"json": ok({"n": 1})}])
    c = make_client(max_retries=5, backoff_base=0.001)
    calls = []
    monkeypatch.setattr(c, "_backoff", lambda attempt, limited: calls.append(limited) or 0.0)
    assert c.request("POST", "segment/mapping/", body={}) == {"n": 1}
    assert calls == [1, 2, 3]  # counted as a rate limit: the third waits minutes
    c.close()


def test_http_429_is_retried_for_a_create_and_named_when_it_persists(requests_mock, client):
    requests_mock.post(AUDIENCE_URL, [{"status_code": 429}, {"json": ok({"audience_id": "2"})}])
    data = client.request("POST", "segment/audience/", body={"action": "create"}, idempotent=False)
    assert data == {"audience_id": "2"}
    requests_mock.post(MAPPING, status_code=429)
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert "HTTP 429 (too many requests)" in str(info.value)
    assert "max_requests_per_second" in str(info.value)
    assert "wrong path" not in str(info.value)


def test_partial_success_is_a_failed_batch_saying_what_tiktok_reported(requests_mock, client):
    requests_mock.post(MAPPING, [{"json": fail(20001, "Partial success")}, {"json": ok()}])
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1
    message = str(info.value)
    assert "code 20001: Partial success" in message
    assert "only part of the batch" in message and "history" in message


@pytest.mark.parametrize(
    "message", ["Audience is busy, try later", "The audience is PROCESSING the last change"]
)
def test_busy_40002_is_retried(requests_mock, client, message):
    requests_mock.post(MAPPING, [{"json": fail(40002, message)}, {"json": ok({"n": 1})}])
    assert client.request("POST", "segment/mapping/", body={}) == {"n": 1}
    assert is_retryable_code(40002, message)


def test_other_40002_is_not_retried(requests_mock, client):
    requests_mock.post(MAPPING, [{"json": fail(40002, "Invalid parameters")}, {"json": ok()}])
    with pytest.raises(TikTokAPIError) as info:
        client.request("POST", "segment/mapping/", body={})
    assert requests_mock.call_count == 1
    assert "rejected a parameter" in str(info.value)
    assert "busy" not in str(info.value)


# The whole request within request_timeout, against the fake server


@pytest.mark.parametrize("head", [True, False], ids=["whole-answer", "body"])
def test_request_timeout_bounds_an_answer_that_trickles_in(head):
    with FakeTikTok() as fake:
        fake.add_advertiser(ADVERTISER)
        fake.add_token(TOKEN, [ADVERTISER])
        fake.inject(dribble_next=1, dribble_seconds=0.1, dribble_head=head, paths=("user/info/",))
        c = make_client(fake.url, timeout=0.5, max_retries=0)
        started = time.monotonic()
        with pytest.raises(TikTokAPIError) as info:
            c.request("GET", "user/info/")
        assert time.monotonic() - started < 5  # the whole answer would take over 10 s
        assert "within request_timeout (0.5 s)" in str(info.value)
        assert info.value.retryable
        assert c.request("GET", "user/info/")["display_name"] == "fake user"
        c.close()


@pytest.mark.parametrize("knob", ["break_next", "reset_next"])
def test_short_or_reset_body_from_a_real_server_is_retried(knob):
    with FakeTikTok() as fake:
        fake.add_advertiser(ADVERTISER)
        fake.add_token(TOKEN, [ADVERTISER])
        fake.inject(**{knob: 1}, paths=("user/info/",))
        c = make_client(fake.url)
        c._reached = True  # as after an earlier answer: a first refusal is no blip
        assert c.request("GET", "user/info/")["display_name"] == "fake user"
        assert fake.stats["broken"] == 1
        assert fake.stats["requests"] == 2
        c.close()


# The token


def test_token_is_stripped_of_surrounding_whitespace(requests_mock):
    requests_mock.get(API + "user/info/", json=ok())
    c = make_client(access_token=f"  {TOKEN}\n")
    c.request("GET", "user/info/")
    assert requests_mock.last_request.headers["Access-Token"] == TOKEN
    c.close()


@pytest.mark.parametrize(
    "token", [f"{TOKEN}\nX-Evil: 1", f"{TOKEN} second", f"{TOKEN}\u00e9", f"{TOKEN}\x00"]
)
def test_token_that_cannot_go_in_a_header_is_refused_without_echoing_it(requests_mock, token):
    requests_mock.get(API + "user/info/", json=ok())
    c = make_client(access_token=token)
    with pytest.raises(TikTokAPIError) as info:
        c.request("GET", "user/info/")
    assert requests_mock.call_count == 0
    assert "cannot go in an HTTP header" in str(info.value)
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value.args)
    assert TOKEN not in shown
    assert not info.value.retryable
    c.close()


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.InvalidHeader(f"Invalid leading whitespace in header: {TOKEN}"),
        requests.exceptions.InvalidURL(f"bad url with {TOKEN}"),
        ValueError(f"Invalid header value b'{TOKEN}'"),
        UnicodeEncodeError("latin-1", TOKEN, 0, 1, "ordinal not in range(256)"),
        urllib3.exceptions.LocationParseError(TOKEN),
    ],
    ids=["invalid-header", "invalid-url", "value-error", "unicode", "location-parse"],
)
def test_no_library_error_text_reaches_the_error(requests_mock, client, exc):
    requests_mock.get(API + "user/info/", exc=exc)
    with pytest.raises(TikTokAPIError) as info:
        client.request("GET", "user/info/")
    error = info.value
    assert error.__suppress_context__
    shown = "".join(traceback.format_exception(error)) + str(error) + repr(error.args)
    assert TOKEN not in shown
    assert type(exc).__name__ in str(error)


# Stopping


def test_stop_ends_a_retry_wait_at_once_and_nothing_is_sent_after(requests_mock):
    requests_mock.post(MAPPING, json=fail(50000))
    c = make_client(backoff_base=60, max_retries=8)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            c.request("POST", "segment/mapping/", body={})
        except TikTokAPIError as exc:
            failure.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    deadline = time.monotonic() + 10
    while requests_mock.call_count == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    c.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert requests_mock.call_count == 1
    assert "being terminated" in str(failure[0])
    with pytest.raises(TikTokAPIError):
        c.request("GET", "user/info/")
    assert requests_mock.call_count == 1
    c.close()


def test_a_compressed_answer_is_decoded(requests_mock, client):
    packed = gzip.compress(json.dumps(ok({"n": 1})).encode())
    requests_mock.get(API + "user/info/", content=packed, headers={"Content-Encoding": "gzip"})
    assert client.request("GET", "user/info/") == {"n": 1}


def test_a_corrupt_compressed_answer_is_a_broken_answer_and_retried(requests_mock, client):
    corrupt = {"content": b"not gzip at all", "headers": {"Content-Encoding": "gzip"}}
    requests_mock.get(API + "user/info/", [corrupt, {"json": ok({"n": 1})}])
    assert client.request("GET", "user/info/") == {"n": 1}
    assert requests_mock.call_count == 2
