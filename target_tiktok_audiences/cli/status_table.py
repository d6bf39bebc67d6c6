"""`status`'s table: the rows of `status.status_row`, in aligned columns for a person.

Every row has the same columns, unknown values shown as `-`, numbers right-aligned under
their header; a failed sync's error follows the table, one line per audience.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns a person can read at a glance; unknown values are `-`."""

    def num(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    def short(text: str | None, width: int = 32) -> str:
        text = text or "-"
        return text if len(text) <= width else text[: width - 1] + "…"

    header = (
        "STREAM",
        "AUDIENCE ID",
        "NAME",
        "CONFIRMED",
        "PENDING",
        "LAST SYNC (UTC)",
        "RESULT",
        "MATCHED",
        "MATCH RATE",
        "VALID",
        "EXPIRES",
        "STATUS",
    )
    right = {3, 4, 7, 8}
    cells = [header]
    for r in rows:
        valid = {True: "yes", False: "no", None: "-"}[r["valid"]]
        cells.append(
            (
                r["stream"],
                r["audience_id"] or "-",
                short(r["name"]),
                num(r["confirmed"]),
                num(r["pending"]),
                (r["last_sync_at"] or "-").replace("T", " ").rstrip("Z"),
                r["last_result"] or "-",
                num(r["matched"]),
                "-" if r["match_rate"] is None else f"{r['match_rate']:.1%}",
                valid,
                (r["expires_at"] or "-")[:10],
                r["status"] or "-",
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cell, widths, strict=True))
        ).rstrip()
        for cell in cells
    ]
    lines.extend(
        f"{r['stream']}: last sync failed: {r['last_error']}"
        for r in rows
        if r["last_result"] == "failed" and r["last_error"]
    )
    return "\n".join(lines)
