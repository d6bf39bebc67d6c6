"""`status`'s table: the rows of `status_rows.status_row`, in aligned columns for a person.

Every row has the same columns, unknown values shown as `-`, numbers right-aligned under
their header; a failed sync's error follows the table, one line per audience. The columns of
composed audiences (split value, streams, shares, lookalike) follow STATUS and appear only
when some row has a value for them, so a table of simple audiences shows none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]
UNKNOWN = "-"


def _num(value: int | None) -> str:
    return UNKNOWN if value is None else f"{value:,}"


def _short(text: str | None, width: int = 32) -> str:
    text = text or UNKNOWN
    return text if len(text) <= width else text[: width - 1] + "…"


def _streams(row: Row) -> str:
    """The streams that feed a composed audience; `-` for the simple form's own stream."""
    streams = row["streams"]
    if not streams or list(streams) == [row["stream"]]:
        return UNKNOWN
    return _short(",".join(streams))


def _shared(row: Row) -> str:
    shared = row["shared_with"]
    if shared is None:
        return UNKNOWN
    return _short(",".join(shared), 40) if shared else "none yet"


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
    Column("NAME", lambda r: _short(r["name"])),
    Column("CONFIRMED", lambda r: _num(r["confirmed"]), right=True),
    Column("PENDING", lambda r: _num(r["pending"]), right=True),
    Column(
        "LAST SYNC (UTC)", lambda r: (r["last_sync_at"] or UNKNOWN).replace("T", " ").rstrip("Z")
    ),
    Column("RESULT", lambda r: r["last_result"] or UNKNOWN),
    Column("MATCHED", lambda r: _num(r["matched"]), right=True),
    Column(
        "MATCH RATE",
        lambda r: UNKNOWN if r["match_rate"] is None else f"{r['match_rate']:.1%}",
        right=True,
    ),
    Column("VALID", lambda r: {True: "yes", False: "no", None: UNKNOWN}[r["valid"]]),
    Column("EXPIRES", lambda r: (r["expires_at"] or UNKNOWN)[:10]),
    Column("STATUS", lambda r: r["status"] or UNKNOWN),
    Column("SPLIT VALUE", lambda r: _short(r["split_value"]), optional=True),
    Column("STREAMS", _streams, optional=True),
    Column("SHARED WITH", _shared, optional=True),
    Column("LOOKALIKE", lambda r: r["lookalike_audience_id"] or UNKNOWN, optional=True),
)


def render_table(rows: Sequence[Row]) -> str:
    """Aligned columns a person can read at a glance; unknown values are `-`."""
    lines = aligned(COLUMNS, rows)
    lines.extend(
        f"{r['stream']}: last sync failed: {r['last_error']}"
        for r in rows
        if r["last_result"] == "failed" and r["last_error"]
    )
    return "\n".join(lines)


def aligned(columns: Sequence[Column], rows: Sequence[Row]) -> list[str]:
    """A header line, then one line per row, each column as wide as its widest cell.

    An optional column is left out when no row has a value in it.
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
