"""A dry run as a client: every request a real run would send, written to a file, none sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import IO

import orjson

from target_tiktok_audiences.tiktok.answers import Answer, RequestIds
from target_tiktok_audiences.tiktok.audiences import CREATE_PATHS
from target_tiktok_audiences.tiktok.http import Body, ClientOptions, TikTokClient
from target_tiktok_audiences.tiktok.mapping import Batch
from target_tiktok_audiences.workers import Workers

# A dry run's stand-in id for an audience it would create, in the bodies it writes, and the
# prefix of each answer's `request_id` (`dry-run:<n>`, n counting the requests written).
DRY_RUN_PREFIX = "dry-run:"


class DryRunClient(TikTokClient):
    """Writes each request a real run would send to a JSON-lines file, and sends nothing."""

    def __init__(
        self,
        output: IO[str],
        api_url: str,
        access_token: str | None,
        options: ClientOptions,
        *,
        workers: Workers | None = None,
    ) -> None:
        """Unpaced, one request at a time: the file's order is the send order."""
        unpaced = replace(options, max_requests_per_second=1e9, max_parallel_requests=1)
        super().__init__(api_url, access_token, unpaced, workers=workers)
        self._output = output

    def map_all(
        self,
        action: str,
        advertiser_ids: Sequence[str],
        audience_id: str,
        batches: Iterable[Batch],
        on_confirmed: Callable[[Batch, RequestIds], None],
    ) -> None:
        """Write each batch in turn, in the calling thread.

        The file's order is then the send order, and no thread holds the GIL while the store
        reads the next batch (a thread that does makes every database call wait for it).
        """
        for batch, body in self._with_bodies(action, advertiser_ids, audience_id, batches):
            on_confirmed(
                batch, self.map_batch(action, advertiser_ids, audience_id, batch, body.result())
            )

    def _send(self, method: str, path: str, params: dict | None, body: Body | None) -> Answer:
        """Write the request, answered with `request_id` `dry-run:<n>`.

        A create (audience or lookalike) is answered with the audience id `dry-run:<name>`.
        """
        written = orjson.Fragment(body) if isinstance(body, bytes) else body
        record = {
            "method": method,
            "path": path,
            "body": written if written is not None else params,
        }
        line = orjson.dumps(record).decode()
        with self._lock:
            self.requests_sent += 1
            request_id = f"{DRY_RUN_PREFIX}{self.requests_sent}"
            self._output.write(line + "\n")
            self._output.flush()
        if (
            path in CREATE_PATHS
            and isinstance(body, dict)
            and body.get("action", "create") == "create"
        ):
            created = {"audience_id": f"{DRY_RUN_PREFIX}{body.get('custom_audience_name')}"}
            return Answer(created, request_id)
        return Answer({}, request_id)

    def close(self) -> None:
        """Close the output file too."""
        super().close()
        self._output.close()
