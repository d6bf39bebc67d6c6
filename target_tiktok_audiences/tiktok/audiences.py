"""The audience endpoints, as calls of the client: create, read, list, share, lookalike.

Each call sends what tiktok-api.md documents and nothing else; none touches the store. A refusal
leaves as a `TikTokAPIError` that keeps TikTok's code and message and names what was asked.
Creates (an audience, a lookalike) are not idempotent: never retried after a timeout, and
successful only with the id TikTok sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from target_tiktok_audiences.errors import TikTokAPIError
from target_tiktok_audiences.tiktok.codes import INVALID_OR_BUSY, NO_PERMISSION, describe_code

SEGMENT_AUDIENCE = "segment/audience/"
AUDIENCE_GET = "dmp/custom_audience/get/"
AUDIENCE_LIST = "dmp/custom_audience/list/"
SHARE = "dmp/custom_audience/share/"
SHARE_CANCEL = "dmp/custom_audience/share/cancel/"
LOOKALIKE_CREATE = "dmp/custom_audience/lookalike/create/"
# The paths that create an audience from a `custom_audience_name` (a dry run answers them).
CREATE_PATHS = frozenset({SEGMENT_AUDIENCE, LOOKALIKE_CREATE})

READ_BATCH = 100  # get/ takes at most 100 ids per call, list/ at most 100 per page
SHARE_BATCH = 10  # share/ and share/cancel/ take at most 10 ids in each list


def _chunks(ids: Sequence[str], size: int) -> list[list[str]]:
    """`ids` in consecutive lists of at most `size`."""
    items = list(ids)
    return [items[start : start + size] for start in range(0, len(items), size)]


def _refused(
    what: str, exc: TikTokAPIError, fixes: Mapping[int, str] | None = None
) -> TikTokAPIError:
    """`exc`, its message led by what was asked; `fixes` name a better fix for some codes."""
    fix = fixes.get(exc.code) if fixes and exc.code is not None else None
    message = f"{what} failed: {exc}"
    if fix and exc.code is not None:
        message = f"{what} failed: {describe_code(exc.code, exc.tiktok_message, fix)}"
    return TikTokAPIError(
        message,
        code=exc.code,
        path=exc.path,
        request_id=exc.request_id,
        tiktok_message=exc.tiktok_message,
    )


class AudienceCalls:
    """The audience endpoints, for a client that sends requests (`TikTokClient`)."""

    if TYPE_CHECKING:

        def request(
            self,
            method: str,
            path: str,
            *,
            params: dict | None = None,
            body: dict | None = None,
            idempotent: bool = True,
        ) -> dict:
            """Send one request, retrying what can be retried; return the envelope's `data`."""
            ...

    def _create(
        self,
        path: str,
        body: dict,
        what: str,
        missing_fix: str,
        fixes: Mapping[int, str] | None = None,
    ) -> str:
        """Send a create (never retried once it may have been carried out); the new id."""
        try:
            data = self.request("POST", path, body=body, idempotent=False)
        except TikTokAPIError as exc:
            raise _refused(what, exc, fixes) from None
        audience_id = str(data.get("audience_id") or "")
        if not audience_id:
            msg = (
                f"{what}: TikTok answered code 0 but sent no audience_id, so nothing was "
                f"stored; {missing_fix}"
            )
            raise TikTokAPIError(msg, path=path)
        return audience_id

    def create_audience(self, advertiser_id: str, name: str) -> str:
        """Create a partner audience named `name`; its id (TikTok allows several of a name)."""
        return self._create(
            SEGMENT_AUDIENCE,
            {"advertiser_id": advertiser_id, "action": "create", "custom_audience_name": name},
            f"creating audience {name!r}",
            "re-run: the next run finds the audience by its name and uses it rather than "
            "creating a second one",
        )

    def read_audiences(self, advertiser_id: str, audience_ids: Sequence[str]) -> Iterator[dict]:
        """TikTok's details (`cover_num`, `is_valid`, ...) of audiences, 100 ids per request."""
        for ids in _chunks(audience_ids, READ_BATCH):
            data = self.request(
                "GET",
                AUDIENCE_GET,
                params={"advertiser_id": advertiser_id, "custom_audience_ids": json.dumps(ids)},
            )
            for item in data.get("list") or []:
                yield item.get("audience_details") or item

    def list_audiences(self, advertiser_id: str) -> Iterator[dict]:
        """Every audience of an advertiser, page after page until TikTok's last."""
        page = 1
        while True:
            data = self.request(
                "GET",
                AUDIENCE_LIST,
                params={"advertiser_id": advertiser_id, "page": page, "page_size": READ_BATCH},
            )
            yield from data.get("list") or []
            total_pages = int((data.get("page_info") or {}).get("total_page") or 1)
            if page >= total_pages:
                return
            page += 1

    def share_audiences(
        self,
        advertiser_id: str,
        audience_ids: Sequence[str],
        shared_advertiser_ids: Sequence[str],
    ) -> None:
        """Share audiences of `advertiser_id` with other advertisers of its Business Center.

        TikTok takes at most 10 ids in each list: longer lists go in several requests, one per
        pair of slices. A refusal stops at the first failed request.
        """
        self._share(SHARE, "sharing", advertiser_id, audience_ids, shared_advertiser_ids)

    def cancel_share(
        self,
        advertiser_id: str,
        audience_ids: Sequence[str],
        shared_advertiser_ids: Sequence[str],
    ) -> None:
        """Undo `share_audiences` for these audiences and advertisers (same splitting)."""
        self._share(
            SHARE_CANCEL,
            "cancelling the share of",
            advertiser_id,
            audience_ids,
            shared_advertiser_ids,
        )

    def _share(
        self,
        path: str,
        doing: str,
        advertiser_id: str,
        audience_ids: Sequence[str],
        shared_advertiser_ids: Sequence[str],
    ) -> None:
        for audiences in _chunks(audience_ids, SHARE_BATCH):
            for advertisers in _chunks(shared_advertiser_ids, SHARE_BATCH):
                body = {
                    "advertiser_id": advertiser_id,
                    "custom_audience_ids": audiences,
                    "shared_advertiser_ids": advertisers,
                }
                try:
                    self.request("POST", path, body=body)
                except TikTokAPIError as exc:
                    what = (
                        f"{doing} audience(s) {', '.join(audiences)} with advertiser(s) "
                        f"{', '.join(advertisers)}"
                    )
                    fix = (
                        "every advertiser in `share_with_advertiser_ids` must be in the "
                        f"Business Center of advertiser {advertiser_id}, and the app needs the "
                        "scope for sharing audiences"
                    )
                    raise _refused(what, exc, {NO_PERMISSION: fix}) from None

    def create_lookalike(
        self,
        advertiser_id: str,
        name: str,
        source_audience_id: str,
        *,
        location_ids: Sequence[str],
        audience_size: str,
        mobile_os: str,
        placements: Sequence[str],
        include_source: bool,
    ) -> str:
        """Create a lookalike of `source_audience_id` named `name`; the lookalike's id.

        TikTok wants a source of at least 100 people that is not a lookalike itself.
        """
        body = {
            "advertiser_id": advertiser_id,
            "custom_audience_name": name,
            "lookalike_spec": {
                "source_audience_id": source_audience_id,
                "include_source": include_source,
                "location_ids": list(location_ids),
                "mobile_os": mobile_os,
                "placements": list(placements),
                "audience_size": audience_size,
            },
        }
        fix = (
            "check the audience's `lookalike` settings; the source audience needs at least 100 "
            "people and may not be a lookalike itself"
        )
        return self._create(
            LOOKALIKE_CREATE,
            body,
            f"creating lookalike {name!r} of audience {source_audience_id}",
            f"re-run later; first delete any lookalike named {name!r} in TikTok Ads Manager, or "
            "the next run creates a second one",
            {INVALID_OR_BUSY: fix},
        )
