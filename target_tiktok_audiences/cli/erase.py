"""`tiktok-audiences erase`: remove people everywhere the store knows them, with a receipt.

The given identifiers are normalised and hashed by the reader's own extractor, so they match
exactly what records stored. Every person holding one of those hashes, in any audience's
members or held people and any source, is erased with all of their hashes: delete mappings go
to each audience holding them (through the sync's client and batching, each batch confirmed),
then the store drops them. A raw value is never printed, stored or put in an error: output
names audiences, counts and hashes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from target_tiktok_audiences.cli.config import add_config_command, load_config
from target_tiktok_audiences.cli.status import configured, with_configured_identity
from target_tiktok_audiences.errors import ConfigError, StoreError, TargetError, TikTokAPIError
from target_tiktok_audiences.identifiers import SLOTS, IdentifierExtractor
from target_tiktok_audiences.identifiers.kinds import ID_TYPES
from target_tiktok_audiences.redaction import mask_url
from target_tiktok_audiences.settings import Definitions, RunSettings, resolve_definitions
from target_tiktok_audiences.settings.resolve import check_top_level
from target_tiktok_audiences.store import AudienceErasure, MembershipStore, hash_text
from target_tiktok_audiences.store.backend import driver_cause
from target_tiktok_audiences.store.erase import Hash
from target_tiktok_audiences.tiktok.codes import NOT_FOUND
from target_tiktok_audiences.tiktok.dry_run import DRY_RUN_PREFIX
from target_tiktok_audiences.tiktok.http import TikTokClient
from target_tiktok_audiences.tiktok.mapping import Batch

# The hashes output lists before "and N more".
_SHOWN = 5
# A hash given as such: its type (a slot name) and how many hex digits it has.
_HEX_DIGITS = {slot: 32 if slot.endswith("_MD5") else 64 for slot in SLOTS}


class ErasureIncompleteError(TargetError):
    """TikTok did not confirm some deletes: those people stay in the store for a re-run."""


def _extractor(config: dict[str, Any], *, dry_run: bool) -> IdentifierExtractor:
    """The reader's extractor for one value of each kind, under the config's normalisation."""
    options = check_top_level({**config, "dry_run": dry_run or config.get("dry_run")})
    return IdentifierExtractor({kind: kind for kind in ID_TYPES}, options)


def _given_hash(text: str, where: str) -> Hash:
    """`TYPE:HEX` (`--hash`) as a hash; a malformed one is refused without quoting it."""
    kind, _, digits = text.partition(":")
    slot = kind.strip().upper()
    digits = digits.strip().lower()
    if slot not in _HEX_DIGITS or len(digits) != _HEX_DIGITS[slot]:
        msg = (
            f"{where} is not TYPE:HEX with TYPE one of {', '.join(SLOTS)} and HEX its "
            "64 hex digits (32 for the MD5 types): fix it; nothing was erased"
        )
        raise ConfigError(msg)
    try:
        return SLOTS.index(slot), bytes.fromhex(digits)
    except ValueError:
        msg = f"{where}: HEX holds a character that is not a hex digit: fix it; nothing was erased"
        raise ConfigError(msg) from None


def _value_hashes(extractor: IdentifierExtractor, kind: str, value: str, where: str) -> list[Hash]:
    """The hashes a record holding `value` in its `kind` field would store."""
    digests, reasons = extractor({kind: value})
    found = [(slot, digest) for slot, digest in enumerate(digests) if digest is not None]
    if reasons or not found:
        msg = (
            f"{where} is not a valid {kind} once normalised as records are: fix it; "
            "nothing was erased"
        )
        raise ConfigError(msg)
    return found


def _entries(args: argparse.Namespace) -> Iterator[tuple[str, str, str]]:
    """(kind, value, where) of every identifier given; `where` names it without its value."""
    counts: dict[str, int] = {}
    for kind, value in args.values or ():
        counts[kind] = counts.get(kind, 0) + 1
        yield kind, value, f"--{kind} value {counts[kind]}"
    if args.from_file:
        path = Path(args.from_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"--from-file {path} cannot be read ({type(exc).__name__}): check the path"
            raise ConfigError(msg) from None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            kind, sep, value = text.partition(":")
            kind = kind.strip().lower()
            where = f"--from-file {path} line {number}"
            if not sep or (kind not in ID_TYPES and kind.upper() not in _HEX_DIGITS):
                msg = (
                    f"{where} is not KIND:VALUE with KIND one of {', '.join(ID_TYPES)} or a "
                    "hash type (EMAIL_SHA256:HEX...): fix it; nothing was erased"
                )
                raise ConfigError(msg)
            yield ("hash", text, where) if kind not in ID_TYPES else (kind, value, where)


def _given_hashes(args: argparse.Namespace, extractor: IdentifierExtractor) -> list[Hash]:
    """Every hash the command line and `--from-file` name, in order, each once."""
    hashes: dict[Hash, None] = {}
    for kind, value, where in _entries(args):
        if kind == "hash":
            found = [_given_hash(value, where)]
        else:
            found = _value_hashes(extractor, kind, value, where)
        hashes.update(dict.fromkeys(found))
    if not hashes:
        msg = "name someone to erase: --email, --phone, --idfa, --aaid, --hash or --from-file"
        raise ConfigError(msg)
    return list(hashes)


_PLURALS = {"hash": "hashes", "person": "people", "held person": "held people"}


def _count(n: int, thing: str) -> str:
    """`1 hash`, `2 hashes`; `1 member`, `2 members`."""
    return f"{n} {thing if n == 1 else _PLURALS.get(thing, thing + 's')}"


def _describe(part: AudienceErasure) -> str:
    """How output names an audience: its name, TikTok id and stream."""
    row = part.row
    where = row.audience_id or "not on TikTok"
    return f"audience {row.name or row.stream} ({where}, stream {row.stream})"


def _batches(part: AudienceErasure, size: int) -> Iterator[Batch]:
    """The rows with a hash to delete, `size` at a time, numbered by their index in `part`."""
    sendable = [i for i, row in enumerate(part.rows) if any(d is not None for d in row)]
    for start in range(0, len(sendable), size):
        chunk = sendable[start : start + size]
        yield Batch(chunk[0], chunk[-1], len(chunk), rows=[part.rows[i] for i in chunk])


class Eraser:
    """Sends one erasure's deletes audience by audience and drops what TikTok confirmed."""

    def __init__(self, store: MembershipStore, client: TikTokClient) -> None:
        self.store = store
        self.client = client
        self.request_ids: list[str] = []
        self.failures: list[str] = []

    def erase(self, part: AudienceErasure) -> dict[str, Any]:
        """Delete one audience's hashes on TikTok and drop the members confirmed; a receipt entry.

        A member whose hashes are all kept (or deleted by an earlier row) has nothing to wait
        for. An audience TikTok no longer has holds nobody there: its members are dropped.
        """
        row = part.row
        sent: set[int] = set()  # rows whose deletes TikTok confirmed
        ids: list[str] = []

        def on_confirmed(batch: Batch, request_ids: tuple[str, ...]) -> None:
            sent.update(range(batch.first, batch.last + 1))
            ids.extend(request_ids)

        audience_id = str(row.audience_id or "")
        on_tiktok = bool(audience_id) and not audience_id.startswith(DRY_RUN_PREFIX)
        try:
            if on_tiktok and part.deletes:
                self.client.map_all(
                    "delete",
                    row.advertiser_ids,
                    audience_id,
                    _batches(part, self.client.batch_size),
                    on_confirmed,
                )
            else:
                sent.update(range(len(part.people)))  # TikTok holds none of them
        except TikTokAPIError as exc:
            if exc.code == NOT_FOUND:
                sent.update(range(len(part.people)))  # deleted on TikTok: it holds nobody
            else:
                self.failures.append(f"{_describe(part)}: {exc}")
        except requests.RequestException as exc:
            self.failures.append(f"{_describe(part)}: cannot talk to TikTok ({type(exc).__name__})")
        dropped = [
            person for person, waits in zip(part.people, part.waits, strict=True) if waits <= sent
        ]
        self.store.drop_members(row.id, dropped)
        self.request_ids.extend(ids)
        return {
            "audience": row.stream,
            "audience_id": row.audience_id,
            "name": row.name,
            "erased": len(dropped),
            "not_confirmed": len(part.people) - len(dropped),
            "held": part.held,
            "deleted": part.deletes,
            "kept": part.kept,
            "request_ids": ids,
        }


def _plan_lines(plan_parts: Sequence[AudienceErasure], sources: dict, *, dry: bool) -> None:
    """One line per audience and per source: who goes, which hashes are deleted."""
    erase, delete = ("would erase", "would delete") if dry else ("erasing", "deleting")
    for part in plan_parts:
        kept = f", keeping {part.kept} that other members hold" if part.kept else ""
        print(
            f"{_describe(part)}: {erase} {_count(len(part.people), 'member')} and "
            f"{_count(part.held, 'held person')}; {delete} {_count(part.deletes, 'hash')}{kept}"
        )
    for (stream, selection), count in sorted(sources.items()):
        which = f"stream {stream}" + (f" (selection {selection})" if selection else "")
        print(f"source of {which}: {erase} {_count(count, 'person')}")
    if not plan_parts and not sources:
        print("nobody in the store holds these hashes")


def run(args: argparse.Namespace) -> int:
    """Erase the people holding the given identifiers; print what was done, and the receipt."""
    config = load_config(args.config)
    dry = bool(args.dry_run or config.get("dry_run"))
    hashes = _given_hashes(args, _extractor(config, dry_run=dry))
    settings = RunSettings.from_config(config)
    definitions = resolve_definitions({**config, "dry_run": True})  # names, not the token
    shown = ", ".join(hash_text(slot, digest) for slot, digest in hashes[:_SHOWN])
    more = f" and {len(hashes) - _SHOWN} more (the receipt lists them all)"
    print(f"{_count(len(hashes), 'hash')}: {shown}" + (more if len(hashes) > _SHOWN else ""))
    store = MembershipStore.open(
        settings.membership_store,
        create=args.suppress and not dry,
        timeout=settings.store_timeout,
    )
    try:
        return _erase(store, settings, definitions, hashes, suppress=args.suppress, dry=dry)
    except store.errors as exc:
        msg = (
            f"membership store {mask_url(settings.membership_store)!r} failed "
            f"({driver_cause(exc)}): re-run the same erase to finish"
        )
        raise StoreError(msg) from None
    finally:
        store.close()


def _erase(
    store: MembershipStore,
    settings: RunSettings,
    definitions: Definitions,
    hashes: list[Hash],
    *,
    suppress: bool,
    dry: bool,
) -> int:
    plan = store.plan_erasure(hashes)
    if not dry:
        # As a sync takes them, one audience at a time; then look again, under the locks.
        for part in plan.audiences:
            label = f"{part.row.name or part.row.stream} (stream {part.row.stream})"
            store.lock_audience(part.row.id, label, settings.store_lock_timeout)
        plan = store.plan_erasure(hashes)
    for part in plan.audiences:  # a held audience's name is the config's until TikTok has it
        named = with_configured_identity(part.row, configured(definitions, part.row))
        part.row = replace(part.row, name=named.name)
    _plan_lines(plan.audiences, plan.sources, dry=dry)
    if dry:
        suppressed = f"; {_count(len(hashes), 'hash')} would be suppressed" if suppress else ""
        print(f"dry run: nothing sent, nothing changed{suppressed}")
        return 0
    members = [part for part in plan.audiences if part.people]
    store.drop_held_and_sources(hashes, [part.row.id for part in members])
    if suppress:
        store.suppress(hashes)
    client = TikTokClient(settings.api_url, settings.access_token, settings.client_options())
    eraser = Eraser(store, client)
    try:
        entries = [eraser.erase(part) for part in plan.audiences]
    finally:
        client.close()
    receipt = store.record_erasure(
        hashes, entries, eraser.request_ids, complete=not eraser.failures
    )
    erased = sum(entry["erased"] for entry in entries)
    held = sum(entry["held"] for entry in entries)
    print(
        f"receipt {receipt}: {_count(erased, 'member')} erased from "
        f"{_count(len(members), 'audience')}, {_count(held, 'held person')} and "
        f"{_count(sum(plan.sources.values()), 'source row')} dropped, "
        f"{_count(len(eraser.request_ids), 'delete request')} confirmed"
        + (f"; {_count(len(hashes), 'hash')} suppressed" if suppress else "")
    )
    if eraser.failures:
        left = sum(entry["not_confirmed"] for entry in entries)
        msg = (
            f"{_count(left, 'member')} not erased, TikTok did not confirm their deletes "
            f"({eraser.failures[0]}"
            + (
                f"; and in {_count(len(eraser.failures) - 1, 'more audience')}"
                if len(eraser.failures) > 1
                else ""
            )
            + "): they stay in the store; re-run the same erase to finish"
        )
        raise ErasureIncompleteError(msg)
    return 0


def _tagged(kind: str) -> Callable[[str], tuple[str, str]]:
    """An argparse `type` that keeps each value with its kind, so values stay in order."""

    def tag(value: str) -> tuple[str, str]:
        return kind, value

    tag.__name__ = kind  # argparse names it in its message about a bad value
    return tag


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`erase --config FILE (--email E | --phone P | --idfa I | --aaid A | --hash T:H)...`."""
    parser = add_config_command(
        commands,
        "erase",
        run,
        help="remove people from every audience and source of the store, with a receipt",
        description="Erase every person who holds one of the given identifiers, with all of "
        "their hashes, from every audience (delete mappings, confirmed) and source of the "
        "membership store, and record an erasure receipt (hashes, never raw values). Values "
        "are normalised as records are.",
    )
    for kind, what in (
        ("email", "an email"),
        ("phone", "a phone number"),
        ("idfa", "an iOS advertising id"),
        ("aaid", "an Android advertising id"),
        (
            "hash",
            "a hash: EMAIL_SHA256, PHONE_SHA256, IDFA_SHA256, IDFA_MD5, AAID_SHA256 or "
            "AAID_MD5, a colon, its hex digits",
        ),
    ):
        parser.add_argument(
            f"--{kind}",
            dest="values",
            action="append",
            type=_tagged(kind),
            metavar="TYPE:HEX" if kind == "hash" else kind.upper(),
            help=f"{what} to erase (repeatable)",
        )
    parser.add_argument(
        "--from-file",
        metavar="F",
        help="identifiers one a line as KIND:VALUE (email:..., phone:..., idfa:..., aaid:..., "
        "or a hash type: EMAIL_SHA256:HEX); blank lines and lines starting with # are skipped",
    )
    parser.add_argument(
        "--suppress",
        action="store_true",
        help="also put the hashes on the store's suppression list: every audience leaves "
        "out the people who hold them from then on (counted `excluded`)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be erased; send nothing, change nothing",
    )
