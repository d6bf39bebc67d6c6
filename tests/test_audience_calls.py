"""The audience endpoints as client calls: bodies exactly, splitting, refusals, dry run."""

from __future__ import annotations

import io
import json

import pytest

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.tiktok.dry_run import DryRunClient
from target_tiktok_audiences.tiktok.http import TikTokClient
from tests.conftest import client_options
from tests.fake_tiktok import FakeTikTok

API = "https://business-api.tiktok.com/open_api/v1.3/"
CREATE_URL = API + "segment/audience/"
GET_URL = API + "dmp/custom_audience/get/"
LIST_URL = API + "dmp/custom_audience/list/"
SHARE_URL = API + "dmp/custom_audience/share/"
CANCEL_URL = API + "dmp/custom_audience/share/cancel/"
LOOKALIKE_URL = API + "dmp/custom_audience/lookalike/create/"
TOKEN = "tok-5b2e0c9a41d84f37"  # a fake token
ADVERTISER = "7000000000000000001"
SOURCE = "1790000000000000888"
SPEC = {
    "location_ids": ["6252001", "2635167"],
    "audience_size": "NARROW",
    "mobile_os": "ANDROID",
    "placements": ["TikTok", "Pangle"],
    "include_source": True,
}


def ok(data=None):
    return {"code": 0, "message": "OK", "request_id": "req-ok", "data": data or {}}


def fail(code, message="something went wrong"):
    return {"code": code, "message": message, "request_id": f"req-{code}", "data": {}}


@pytest.fixture
def client():
    c = TikTokClient(
        API, TOKEN, client_options(backoff_base=0.001, max_requests_per_second=1e6, max_retries=3)
    )
    yield c
    c.close()


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


# Create, read, list


def test_create_audience_sends_the_create_and_returns_the_id(requests_mock, client):
    requests_mock.post(CREATE_URL, json=ok({"audience_id": "888"}))
    assert client.create_audience(ADVERTISER, "Customers") == "888"
    assert requests_mock.request_history[0].json() == {
        "advertiser_id": ADVERTISER,
        "action": "create",
        "custom_audience_name": "Customers",
    }


def test_create_audience_is_not_retried_after_a_server_fault(requests_mock, client):
    requests_mock.post(CREATE_URL, json=fail(50000))
    with pytest.raises(TikTokAPIError) as caught:
        client.create_audience(ADVERTISER, "Customers")
    assert requests_mock.call_count == 1
    assert caught.value.code == 50000
    assert str(caught.value).startswith("creating audience 'Customers' failed: ")


def test_read_audiences_asks_100_ids_at_a_time(requests_mock, client):
    def answer(request, context):
        wanted = json.loads(request.qs["custom_audience_ids"][0])
        return ok({"list": [{"audience_details": {"audience_id": i}} for i in wanted]})

    requests_mock.get(GET_URL, json=answer)
    wanted = [str(1000 + i) for i in range(250)]
    found = list(client.read_audiences(ADVERTISER, wanted))
    assert [a["audience_id"] for a in found] == wanted
    sent = [json.loads(r.qs["custom_audience_ids"][0]) for r in requests_mock.request_history]
    assert [len(batch) for batch in sent] == [100, 100, 50]
    assert all(r.qs["advertiser_id"] == [ADVERTISER] for r in requests_mock.request_history)


def test_list_audiences_reads_every_page(requests_mock, client):
    pages = [[{"audience_id": str(p * 10 + i)} for i in range(2)] for p in range(3)]

    def answer(request, context):
        page = int(request.qs["page"][0])
        info = {"page": page, "page_size": 100, "total_number": 6, "total_page": 3}
        return ok({"list": pages[page - 1], "page_info": info})

    requests_mock.get(LIST_URL, json=answer)
    listed = [a["audience_id"] for a in client.list_audiences(ADVERTISER)]
    assert listed == ["0", "1", "10", "11", "20", "21"]
    assert [r.qs["page"] for r in requests_mock.request_history] == [["1"], ["2"], ["3"]]
    assert all(r.qs["page_size"] == ["100"] for r in requests_mock.request_history)


# Sharing


@pytest.mark.parametrize(
    ("call", "url"), [("share_audiences", SHARE_URL), ("cancel_share", CANCEL_URL)]
)
def test_share_lists_over_10_go_in_several_requests(requests_mock, client, call, url):
    requests_mock.post(url, json=ok())
    audiences, advertisers = ids("71", 23), ids("70", 12)
    getattr(client, call)(ADVERTISER, audiences, advertisers)
    bodies = [r.json() for r in requests_mock.request_history]
    assert bodies == [
        {
            "advertiser_id": ADVERTISER,
            "custom_audience_ids": audiences[a : a + 10],
            "shared_advertiser_ids": advertisers[s : s + 10],
        }
        for a in (0, 10, 20)
        for s in (0, 10)
    ]


def test_a_share_of_10_and_10_is_one_request(requests_mock, client):
    requests_mock.post(SHARE_URL, json=ok())
    client.share_audiences(ADVERTISER, ids("71", 10), ids("70", 10))
    assert requests_mock.call_count == 1


def test_a_refused_share_is_one_line_naming_the_advertisers_and_is_not_retried(
    requests_mock, client
):
    message = "No permission to share with advertiser 7000000000000000009"
    requests_mock.post(SHARE_URL, json=fail(40001, message))
    with pytest.raises(TikTokAPIError) as caught:
        client.share_audiences(ADVERTISER, ids("71", 12), ["7000000000000000009"])
    assert requests_mock.call_count == 1  # neither retried nor carried on with the next slice
    error = caught.value
    assert (error.code, error.tiktok_message, error.request_id) == (40001, message, "req-40001")
    line = str(error)
    assert "\n" not in line
    assert line.startswith("sharing audience(s) 71000, 71001, ")
    assert "with advertiser(s) 7000000000000000009 failed: TikTok answered code 40001" in line
    assert "Business Center of advertiser 7000000000000000001" in line
    assert TOKEN not in line


def test_a_share_is_retried_after_a_server_fault(requests_mock, client):
    requests_mock.post(SHARE_URL, [{"json": fail(50000)}, {"json": ok()}])
    client.share_audiences(ADVERTISER, ["71000"], ["70000"])
    assert requests_mock.call_count == 2


# Lookalikes


def test_create_lookalike_sends_the_spec_exactly(requests_mock, client):
    requests_mock.post(LOOKALIKE_URL, json=ok({"audience_id": "999"}))
    assert client.create_lookalike(ADVERTISER, "Lookalike", SOURCE, **SPEC) == "999"
    assert requests_mock.request_history[0].json() == {
        "advertiser_id": ADVERTISER,
        "custom_audience_name": "Lookalike",
        "lookalike_spec": {"source_audience_id": SOURCE, **SPEC},
    }


@pytest.mark.parametrize("code", [40002, 50000, 40001])
def test_a_refused_lookalike_is_not_retried(requests_mock, client, code):
    requests_mock.post(LOOKALIKE_URL, json=fail(code, "source too small"))
    with pytest.raises(TikTokAPIError) as caught:
        client.create_lookalike(ADVERTISER, "Lookalike", SOURCE, **SPEC)
    assert requests_mock.call_count == 1
    assert caught.value.code == code
    line = str(caught.value)
    assert line.startswith(f"creating lookalike 'Lookalike' of audience {SOURCE} failed: ")
    assert "source too small" in line
    assert ("at least 100 people" in line) == (code == 40002)


def test_a_lookalike_refused_while_its_source_is_busy_says_so(requests_mock, client):
    requests_mock.post(LOOKALIKE_URL, json=fail(40002, "Audience is busy processing"))
    with pytest.raises(TikTokAPIError) as caught:
        client.create_lookalike(ADVERTISER, "Lookalike", SOURCE, **SPEC)
    assert "stayed busy" in str(caught.value) and "at least 100" not in str(caught.value)


def test_a_rate_limited_lookalike_is_retried(requests_mock, client):
    requests_mock.post(LOOKALIKE_URL, [{"json": fail(40100)}, {"json": ok({"audience_id": "999"})}])
    assert client.create_lookalike(ADVERTISER, "Lookalike", SOURCE, **SPEC) == "999"
    assert requests_mock.call_count == 2


def test_a_lookalike_answered_without_its_id_fails(requests_mock, client):
    requests_mock.post(LOOKALIKE_URL, json=ok())
    with pytest.raises(TikTokAPIError, match="sent no audience_id"):
        client.create_lookalike(ADVERTISER, "Lookalike", SOURCE, **SPEC)


# Dry run


def test_dry_run_writes_shares_and_lookalikes_and_sends_nothing(requests_mock):
    out = io.StringIO()
    dry = DryRunClient(out, API, None, client_options())
    dry.share_audiences(ADVERTISER, ids("71", 11), ["70000"])
    dry.cancel_share(ADVERTISER, ["71000"], ["70000"])
    lookalike = dry.create_lookalike(ADVERTISER, "Lookalike", "dry-run:Customers", **SPEC)
    assert lookalike == "dry-run:Lookalike"
    assert requests_mock.call_count == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["method"], line["path"]) for line in lines] == [
        ("POST", "dmp/custom_audience/share/"),
        ("POST", "dmp/custom_audience/share/"),
        ("POST", "dmp/custom_audience/share/cancel/"),
        ("POST", "dmp/custom_audience/lookalike/create/"),
    ]
    assert lines[1]["body"]["custom_audience_ids"] == ["71010"]
    assert lines[3]["body"]["lookalike_spec"]["source_audience_id"] == "dry-run:Customers"
    dry.close()


def test_a_dry_run_delete_is_no_create(requests_mock):
    out = io.StringIO()
    dry = DryRunClient(out, API, None, client_options())
    body = {"advertiser_id": ADVERTISER, "action": "delete", "delete_audience_id": "888"}
    assert dry.request("POST", "segment/audience/", body=body) == {}
    dry.close()


# Against the fake


def test_share_and_lookalike_against_the_fake():
    outside = "7000000000000000077"
    with FakeTikTok() as fake:
        fake.add_advertiser(ADVERTISER)
        fake.add_advertiser("7000000000000000002")
        fake.add_advertiser(outside, business_center="elsewhere")
        fake.add_token(TOKEN, [ADVERTISER])
        source = fake.add_audience(ADVERTISER, "Customers")
        client = TikTokClient(fake.url, TOKEN, client_options(max_requests_per_second=1e6))
        client.share_audiences(ADVERTISER, [source], ["7000000000000000002"])
        assert fake.shares(source) == {"7000000000000000002"}
        with pytest.raises(TikTokAPIError) as caught:
            client.share_audiences(ADVERTISER, [source], [outside])
        assert caught.value.code == 40001 and outside in str(caught.value)
        client.cancel_share(ADVERTISER, [source], ["7000000000000000002"])
        assert fake.shares(source) == set()
        with pytest.raises(TikTokAPIError) as caught:
            client.create_lookalike(ADVERTISER, "Lookalike", source, **SPEC)
        assert caught.value.code == 40002 and "at least 100" in str(caught.value)
        client.close()


@pytest.fixture
def seeded():
    """The fake with a source audience of 100 people, and a client of it."""
    with FakeTikTok() as fake:
        fake.add_advertiser(ADVERTISER)
        fake.add_advertiser("7000000000000000002")
        fake.add_token(TOKEN, [ADVERTISER])
        source = fake.add_audience(ADVERTISER, "Customers")
        rows = [[{"id": f"{i:064x}", "audience_ids": [source]}] for i in range(100)]
        client = TikTokClient(
            fake.url, TOKEN, client_options(max_requests_per_second=1e6, backoff_base=0.001)
        )
        client.request(
            "POST",
            "segment/mapping/",
            body={
                "advertiser_ids": [ADVERTISER],
                "action": "add",
                "id_schema": ["EMAIL_SHA256"],
                "batch_data": rows,
            },
        )
        yield fake, client, source
        client.close()


def test_a_lookalike_whose_answer_breaks_off_is_not_created_twice(seeded):
    fake, client, source = seeded
    fake.inject(break_next=1, paths=("dmp/custom_audience/lookalike/create/",))
    with pytest.raises(TikTokAPIError, match="broke off mid-way"):
        client.create_lookalike(ADVERTISER, "Lookalike", source, **SPEC)
    assert len(fake.requests_log("dmp/custom_audience/lookalike/create/")) == 1
    assert [a["type"] for a in fake.audiences()] == ["Partner", "Lookalike"]
    fake.inject()
    lookalike = client.create_lookalike(ADVERTISER, "Lookalike 2", source, **SPEC)
    assert fake.audience(lookalike)["type"] == "Lookalike"


def test_a_share_whose_answer_breaks_off_is_sent_again(seeded):
    fake, client, source = seeded
    fake.inject(break_next=1, paths=("dmp/custom_audience/share/",))
    client.share_audiences(ADVERTISER, [source], ["7000000000000000002"])
    assert len(fake.requests_log("dmp/custom_audience/share/")) == 2
    assert fake.shares(source) == {"7000000000000000002"}
