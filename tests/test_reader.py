"""The reader's record lane: RECORD lines handed to workers unparsed give exactly the outcome
of parsing them one by one, in every format a tap may write, and the same errors."""

from __future__ import annotations

import io
import itertools
import json
import pickle
from collections import Counter
from collections.abc import Callable

import pytest

from target_tiktok_audiences import reader
from target_tiktok_audiences.errors import InputError
from target_tiktok_audiences.identifiers import DEFAULT_IDENTIFIER_FIELDS
from target_tiktok_audiences.people import (
    PARALLEL_AFTER,
    MissingKeyError,
    RecordSpec,
    hash_chunk,
    hash_lines,
)
from target_tiktok_audiences.reader import (
    one_stream_block,
    parse_line,
    read_blocks,
    record_stream,
)
from target_tiktok_audiences.settings import normalization_options
from tests.conftest import record, schema, state

SPEC = RecordSpec(
    "contacts",
    ("id",),
    None,
    None,
    tuple(sorted(DEFAULT_IDENTIFIER_FIELDS.items())),
    normalization_options({}),
)


def compact(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


def spaced(message: dict) -> str:
    return json.dumps(message)


def reordered(message: dict) -> str:
    """Valid Singer that does not begin like a RECORD: it takes the line-by-line path."""
    return json.dumps(dict(reversed(list(message.items()))))


# Pure parts


@pytest.mark.parametrize("write", [compact, spaced])
def test_a_record_line_names_its_stream(write):
    line = write(record(stream="contacts", id=1)).encode()
    assert record_stream(line) == ("contacts", line[: line.index(b"contacts") + 9])


@pytest.mark.parametrize(
    "line",
    [
        reordered(record(id=1)),
        spaced(state({"a": 1})),
        '{"type":"RECORD","stream":"con\\"tacts","record":{}}',  # an escape: parse it
        '{"type":"RECORD","stream":"unterminated',
        "",
    ],
)
def test_other_lines_name_no_stream(line):
    assert record_stream(line.encode()) is None


def test_a_block_of_one_streams_records_is_taken_whole():
    lines = [compact(record(id=i, email=f"p{i}@example.com")) for i in range(50)]
    block = ("\n".join(lines) + "\n").encode()
    assert one_stream_block(block) == ("contacts", 50)


@pytest.mark.parametrize(
    "odd",
    [
        compact(state({"after": 3})),
        compact(record(stream="contacts2", id=3)),  # a stream whose name extends the other's
        compact(record(stream="other", id=3)),
        spaced(record(id=3)),  # the same stream, written the other way
        reordered(record(id=3)),
        "",
    ],
)
def test_a_block_with_any_other_line_is_read_line_by_line(odd):
    lines = [compact(record(id=i)) for i in range(5)]
    lines.insert(3, odd)
    assert one_stream_block(("\n".join(lines) + "\n").encode()) is None


def test_a_block_with_carriage_returns_or_no_final_newline_is_read_line_by_line():
    lines = [compact(record(id=i)) for i in range(5)]
    assert one_stream_block(("\r\n".join(lines) + "\r\n").encode()) is None
    assert one_stream_block("\n".join(lines).encode()) is None


@pytest.mark.parametrize("text", [False, True])
def test_blocks_hold_whole_lines_and_lose_nothing(monkeypatch, text):
    monkeypatch.setattr(reader, "_BLOCK", 7)  # far shorter than a line
    data = "".join(f'{{"n":{i}, "pad":"{"x" * (i % 13)}"}}\n' for i in range(200)) + '{"last":1}'
    source = io.StringIO(data) if text else io.TextIOWrapper(io.BytesIO(data.encode()))
    blocks = list(read_blocks(source))
    assert b"".join(blocks) == data.encode()
    assert all(b.endswith(b"\n") for b in blocks[:-1])
    assert blocks[-1] == b'{"last":1}'


def test_unparsed_lines_hash_as_parsed_records_do():
    records = [
        {"id": 1, "email": " A@Example.com ", "phone": "+1 415 555 2671"},
        {"id": 2**70, "email": "big@example.com"},  # over 64 bits: the slow parser
        {"id": "x", "email": "gone@example.com", "_sdc_deleted_at": "2026-01-01T00:00:00Z"},
        {"id": 3, "email": "not an email"},
        {"id": 4, "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC", "phone": 15},
        {"id": 1, "email": "a@example.com"},
    ]
    lines = "\n".join(compact(record(**r)) for r in records).encode() + b"\n"
    read = SPEC.reader()
    expected = hash_chunk(SPEC, [read(json.loads(compact(r))) for r in records])
    assert hash_lines(SPEC, [(10, 1, lines)]) == expected
    # Split in pieces, as blocks and single lines arrive.
    one, rest = lines.split(b"\n", 1)
    assert hash_lines(SPEC, [(10, 1, one), (11, 2, rest)]) == expected


@pytest.mark.parametrize(
    ("text", "long"),
    [
        (b'{"id":1234567890123456789}', True),  # 19 digits
        (b'{"id":-9223372036854775809}', True),
        (b'{"id":123456789012345678}', False),  # 18 digits
        (b'"1234567890.1234567890"', False),  # no run of 19
        ("\u0661".encode() * 40, False),  # digits, but not ASCII ones
        (b"\xff" * 19 + b"0" * 18, False),
        (b"x" * 1000 + b"0" * 19, True),
    ],
)
def test_long_number_finds_runs_of_19_ascii_digits_only(text, long):
    assert reader.long_number(text) is long


def test_integers_over_64_bits_stay_exact_and_distinct():
    ids = [2**64 + 1, 2**64 + 2, -(2**63) - 1, -(2**63) - 2]
    lines = [compact(record(id=i, email="same@example.com")) for i in ids]
    assert [parse_line(x.encode(), 1)["record"]["id"] for x in lines] == ids
    people = hash_lines(SPEC, [(1, 1, "\n".join(lines).encode())])[0]
    width = len(people.packed) // people.count
    keys = {people.packed[i * width : i * width + 16] for i in range(people.count)}
    assert len(keys) == len(ids)  # as floats, they would be two people


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"type":"RECORD","stream":"contacts","record":{"id":1}', "input line 12 is not valid"),
        ('{"type":"RECORD","stream":"contacts","record":[1]}', "is not a JSON object"),
        ('{"type":"RECORD","stream":"contacts"}', "lacks required key(s) record"),
        ('{"type":"RECORD","stream":"contacts","record":{},"type":"STATE"}', "ambiguous"),
        ('{"type":"RECORD","stream":"contacts","record":{"email":"a@b.co"}}', "key properties"),
    ],
)
def test_a_faulty_line_raises_the_readers_error_with_its_number(line, message):
    good = compact(record(id=1, email="a@example.com"))
    with pytest.raises(InputError) as raised:
        hash_lines(SPEC, [(10, 7, f"{good}\n{good}\n{line}\n{good}\n".encode())])
    assert message in str(raised.value)
    assert "a@b.co" not in str(raised.value)


def test_a_missing_key_error_crosses_from_a_worker_whole():
    error = pickle.loads(pickle.dumps(MissingKeyError("contacts", ["id", "region"])))
    assert isinstance(error, MissingKeyError)
    assert str(error) == str(MissingKeyError("contacts", ["id", "region"]))


# The console script, through workers

COUNT = PARALLEL_AFTER + 3000  # past the inline start: most chunks go to worker processes


def snapshot_lines(write, *, bad: str | None = None) -> list[str]:
    lines = [spaced(schema())]
    for i in range(COUNT):
        person = {"id": i % (COUNT - 500), "email": f"p{i}@example.com"}  # the last 500 repeat
        if i % 7 == 0:
            person["phone"] = f"+1 415 555 {i % 10000:04d}"
        if i % 97 == 0:
            person["email"] = "not an email"
        if i % 251 == 0:
            person["_sdc_deleted_at"] = "2026-11-01T00:00:00Z"
        lines.append(write(record(**person)))
        if i % 5000 == 4999:
            lines.append(write(state({"after": i})))
    if bad is not None:
        lines.insert(COUNT - 10, bad)
    lines.append(write(state({"after": "end"})))
    return lines


def mixed() -> Callable[[dict], str]:
    """Each format in turn: no block is one stream's records alone."""
    turn = itertools.cycle((compact, spaced, reordered))
    return lambda message: next(turn)(message)


WRITERS = {"compact": compact, "spaced": spaced, "reordered": reordered}


def dry_runs(target, tmp_path, writers: dict, **settings) -> dict[str, tuple]:
    """Each writer's input, run dry: (requests planned, report without its seconds, STATE)."""
    outputs = {}
    for name, write in writers.items():
        out = tmp_path / f"{name}.jsonl"
        run = target.run(snapshot_lines(write), dry_run=True, dry_run_output=str(out), **settings)
        assert run.returncode == 0, run.stderr
        report = [line.split("| ")[-1] for line in run.stderr.splitlines() if "[dry run]" in line]
        outputs[name] = (out.read_text(), report[0].rsplit(",", 1)[0], run.states)
    return outputs


def expected_report() -> str:
    """The report of `snapshot_lines`, worked out record by record: the last record wins."""
    last: dict[int, str] = {}
    skipped: Counter[str] = Counter()
    for i in range(COUNT):
        if i % 97 == 0 and i % 7 and i % 251:  # no usable identifier
            skipped["invalid_email"] += 1
            continue
        key = i % (COUNT - 500)
        if key in last:
            skipped["duplicate"] += 1
        last[key] = "removed" if i % 251 == 0 else "added"
    outcomes = Counter(last.values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    return (
        f"added {outcomes['added']}, removed {outcomes['removed']}, changed 0, unchanged 0, "
        f"skipped {skipped.total()} ({reasons}), held 0"
    )


def test_every_format_gives_the_same_requests_report_and_state(target, tmp_path):
    outputs = dry_runs(target, tmp_path, {**WRITERS, "mixed": mixed()})
    requests, report, states = outputs["compact"]
    assert requests.count("segment/mapping/") >= 2
    assert expected_report() in report
    assert states == []  # a dry run confirms nothing
    assert outputs["spaced"] == outputs["compact"]
    assert outputs["reordered"] == outputs["compact"]
    assert outputs["mixed"] == outputs["compact"]


def test_incremental_drains_fall_where_they_would_line_by_line(target, tmp_path):
    outputs = dry_runs(target, tmp_path, WRITERS, sync_mode="incremental", batch_size_rows=3000)
    requests = outputs["compact"][0]
    assert requests.count("segment/mapping/") >= COUNT // 3000  # one drain, one request
    assert outputs["spaced"] == outputs["compact"]
    assert outputs["reordered"] == outputs["compact"]


def test_a_fault_found_in_a_worker_fails_the_run_before_any_state(target):
    bad = '{"type":"RECORD","stream":"contacts","record":{"id":1,"email":"x@example.com"'
    lines = snapshot_lines(compact, bad=bad)
    run = target.run(lines)
    assert run.returncode == 1
    assert f"input line {lines.index(bad) + 1} is not valid JSON" in run.errors[0]
    assert run.states == []
    assert "x@example.com" not in run.stderr
