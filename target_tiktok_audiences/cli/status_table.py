"""`status`'s table: the rows of `status_rows.status_row`, in aligned columns for a person.

Every row has the same columns, unknown values shown as `-`, numbers right-aligned under
their header; a failed sync's error follows the table, one line per audience, then one line
per stream that has stopped sending (`stale_streams`). The columns of composed audiences
(split value, streams, shares, lookalike) and STALE STREAMS follow STATUS and appear only
when some row has a value for them, so a table of simple, fresh audiences shows none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
UNKNOWN = "-"


def number(value: int | None) -> str:
    """A count with thousands separators; `-` when unknown."""
    return UNKNOWN if value is None else f"{value:,}"


def yes_no(value: bool | None) -> str:
    """A flag as `yes` or `no`; `-` when unknown."""
    return {True: "yes", False: "no", None: UNKNOWN}[value]


def day(iso: str | None) -> str:
    """The date of an ISO 8601 time; `-` when unknown."""
    return (iso or UNKNOWN)[:10]


def short(text: str | None, width: int = 32) -> str:
    """`text` cut to `width` characters with an ellipsis; `-` when unknown."""
    text = text or UNKNOWN
    return text if len(text) <= width else text[: width - 1] + "…"


def _streams(row: Row) -> str:
    """The streams that feed a composed audience; `-` for the simple form's own stream."""
    streams = row["streams"]
    if not streams or list(streams) == [row["stream"]]:
        return UNKNOWN
    return short(",".join(streams))


def _shared(row: Row) -> str:
    shared = row["shared_with"]
    if shared is None:
        return UNKNOWN
    return short(",".join(shared), 40) if shared else "none yet"


@dataclass(frozen=True)
class Column:
    """One column: its header, how a row fills it, and how it is laid out."""

    header: str
    cell: Callable[[Row], str]
    right: bool = False  # a number, right-aligned under its header
    optional: bool = False  # shown only when some row has a value (not `-`) in it


COLUMNS = (
    Column("STREAM", lambda r: r["stream"]),
    Column("AUDIENCE ID", lambda r: r["audience_id"] or UNKNOWN),
    Column("NAME", lambda r: short(r["name"])),
    Column("CONFIRMED", lambda r: number(r["confirmed"]), right=True),
    Column("PENDING", lambda r: number(r["pending"]), right=True),
    Column(
        "LAST SYNC (UTC)", lambda r: (r["last_sync_at"] or UNKNOWN).replace("T", " ").rstrip("Z")
    ),
    Column("RESULT", lambda r: r["last_result"] or UNKNOWN),
    Column("MATCHED", lambda r: number(r["matched"]), right=True),
    Column(
        "MATCH RATE",
        lambda r: UNKNOWN if r["match_rate"] is None else f"{r['match_rate']:.1%}",
        right=True,
    ),
    Column("VALID", lambda r: yes_no(r["valid"])),
    Column("EXPIRES", lambda r: day(r["expires_at"])),
    Column("STATUS", lambda r: r["status"] or UNKNOWN),
    Column("SPLIT VALUE", lambda r: short(r["split_value"]), optional=True),
    Column("STREAMS", _streams, optional=True),
    Column("SHARED WITH", _shared, optional=True),
    Column("LOOKALIKE", lambda r: r["lookalike_audience_id"] or UNKNOWN, optional=True),
    Column(
        "STALE STREAMS",
        lambda r: short(",".join(s["stream"] for s in r["stale_streams"] or ())),
        optional=True,
    ),
)


def _stale_notes(rows: Sequence[Row]) -> list[str]:
    """One line per stream that has stopped sending, naming the audiences it feeds."""
    since: dict[str, str | None] = {}
    feeds: dict[str, list[str]] = {}
    for r in rows:
        for stale in r["stale_streams"] or ():
            since[stale["stream"]] = stale["last_snapshot_at"]
            keys = feeds.setdefault(stale["stream"], [])
            if r["stream"] not in keys:
                keys.append(r["stream"])
    return [
        f"stream {stream} has sent "
        + (f"nothing since {at.replace('T', ' ').rstrip('Z')} UTC" if at else "nothing yet")
        + f" (audience{'s' * (len(feeds[stream]) > 1)} {', '.join(feeds[stream])}): "
        "check the tap or job that sends it"
        for stream, at in since.items()
    ]


def aligned(columns: Sequence[Column], rows: Sequence[Row]) -> list[str]:
    """The header and one line per row, each column as wide as its widest cell.

    An optional column in which every cell is unknown is left out.
    """
    filled = [(column, [column.cell(r) for r in rows]) for column in columns]
    shown = [
        (column, cells)
        for column, cells in filled
        if not column.optional or any(c != UNKNOWN for c in cells)
    ]
    table = [[column.header for column, _ in shown]]
    table += [[cells[i] for _, cells in shown] for i in range(len(rows))]
    widths = [max(len(text) for text in texts) for texts in zip(*table, strict=True)]
    return [
        "  ".join(
            text.rjust(width) if column.right else text.ljust(width)
            for text, width, (column, _) in zip(texts, widths, shown, strict=True)
        ).rstrip()
        for texts in table
    ]


def render_table(rows: Sequence[Row]) -> str:
    """Aligned columns a person can read at a glance (unknown values are `-`), then notes."""
    lines = aligned(COLUMNS, rows)
    lines.extend(
        f"{r['stream']}: last sync failed: {r['last_error']}"
        for r in rows
        if r["last_result"] == "failed" and r["last_error"]
    )
    lines.extend(_stale_notes(rows))
    return "\n".join(lines)
