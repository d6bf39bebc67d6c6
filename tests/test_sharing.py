"""What is made of a synced audience: its lookalike's name under `split_by`, per value."""

from __future__ import annotations

from typing import Any

from target_tiktok_audiences.settings import resolve_definitions
from target_tiktok_audiences.sharing import share_and_extend
from target_tiktok_audiences.store import MembershipStore
from tests.store_sql import confirm_rows
from tests.test_store import ADVERTISER, FIRST, person


class Recording:
    """Takes the calls `share_and_extend` makes, as TikTok would answer them."""

    def __init__(self) -> None:
        self.lookalikes: list[str] = []

    def list_audiences(self, advertiser_id: str) -> list[dict]:
        return [{"audience_id": f"9{i}", "name": n} for i, n in enumerate(self.lookalikes, 1)]

    def create_lookalike(self, advertiser_id: str, name: str, source: str, **spec: Any) -> str:
        self.lookalikes.append(name)
        return f"9{len(self.lookalikes)}"


def test_a_split_by_audience_gets_a_lookalike_per_value_named_by_it(tmp_path):
    config = {
        "advertiser_ids": [ADVERTISER],
        "dry_run": True,
        "audiences": {
            "tiers": {
                "audience_name": "Tier {value}",
                "streams": ["a"],
                "split_by": "tier",
                "lookalike": {"audience_name": "Like tier {value}", "location_ids": ["6252001"]},
            }
        },
    }
    definition = resolve_definitions(config).audiences["tiers"]
    store = MembershipStore(str(tmp_path / "m.sqlite"))
    try:
        rows = []
        for value in ("gold", "silver"):
            row = store.audience("tiers", f"name:{ADVERTISER}:Tier {value}", [ADVERTISER])
            store.set_composition(row.id, ("a",), value)
            store.set_tiktok_audience(row.id, f"7{len(rows)}", f"Tier {value}")
            people = [(person(f"{value}{i}"), FIRST["same"]) for i in range(100)]
            confirm_rows(store, row.id, "add", people)
            store.finish_upload(row.id)
            rows.append(store.get_audience(row.id))
        client = Recording()
        assert share_and_extend(client, store, definition, rows) == []  # type: ignore[arg-type]
        assert client.lookalikes == ["Like tier gold", "Like tier silver"]
        assert [store.get_audience(r.id).lookalike_audience_id for r in rows] == ["91", "92"]
    finally:
        store.close()
