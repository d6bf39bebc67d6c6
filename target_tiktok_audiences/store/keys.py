"""Key properties: who a person is, and re-matching people when a stream's keys change.

Person keys are digests of the key values, so under other keys every person looks new. A
change of keys is refused unless `allow_key_change`; then stored people are re-keyed to the
staged people whose hashes are exactly theirs, in one transaction with the new keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from target_tiktok_audiences.errors import InputError
from target_tiktok_audiences.store.backend import Backend
from target_tiktok_audiences.store.schema import SLOT_COLUMNS, SLOT_LIST
from target_tiktok_audiences.store.staged import Staging


class KeyPropertiesChangedError(InputError):
    """A stream's key properties are not those of its audience's last sync."""


def _keys_text(keys: Sequence[str]) -> str:
    """Key properties for a message: `[a, b]`, or that there are none."""
    return f"[{', '.join(keys)}]" if keys else "none (people known by their identifier hashes)"


def _remember_keys(db: Backend, audience: int, keys: Sequence[str]) -> None:
    """Inside a transaction: the key properties the audience is synced under from now on."""
    db.execute(
        "UPDATE audiences SET key_properties = ? WHERE id = ?", (json.dumps(list(keys)), audience)
    )


class Keys(Staging):
    """Compares a stream's key properties with its audience's, and re-matches people."""

    def key_change(
        self, audience: int, keys: Sequence[str], *, allow: bool, stream: str, label: str
    ) -> bool:
        """Compare a stream's key properties with those its audience was last synced under.

        Person keys are digests of the key values (of the hashes, without keys), so under
        other keys every person looks new. Returns True when the keys changed and `allow`
        (`allow_key_change`) is set: the staged people must then be re-matched by their
        hashes (`rematch`) before anything is planned. Unchanged: False. Not known yet (a new
        audience, or one from a store older than schema version 3), or nobody stored under
        the old keys: the keys are remembered now, False. Changed without `allow`:
        KeyPropertiesChangedError, before any record. Going from no keys to keys, or back, is
        a change.
        """
        keys = tuple(keys)
        known = self.get_audience(audience).key_properties
        if known == keys:
            return False
        if known is None or not (self.count_members(audience) or self.count_pending(audience)):
            with self.transaction() as db:
                _remember_keys(db, audience, keys)
            return False
        if allow:
            return True
        msg = (
            f"stream {stream!r} changed its key properties since audience {label} was last "
            f"synced, from {_keys_text(known)} to {_keys_text(keys)}: every person would look "
            "new and the confirmed ones would leave; set `allow_key_change: true` for one run "
            "to re-match people by their identifier hashes (or restore the old keys in the tap)"
        )
        raise KeyPropertiesChangedError(msg)

    def rematch(self, audience: int, keys: Sequence[str]) -> tuple[int, int]:
        """Re-key confirmed and held people to the staged people they are; remember `keys`.

        A staged member whose slots are exactly those of one confirmed (or held) person, and
        no other staged person has those slots, is that person: the stored row takes the
        staged person's key, so the plan sees only real changes. Ambiguous ones (several with
        the same hashes) and ones whose new key is already taken keep their old key, and so
        plan as a leaver and a joiner. Store-only (TikTok holds hashes, which do not change),
        in one transaction with the new keys. Returns (people re-keyed, people stored).
        """
        self._index_staged(audience)
        db = self._db
        same = " AND ".join(db.words["same"].format(a=f"t.{c}", b=f"st.{c}") for c in SLOT_COLUMNS)
        # Each stored person is probed by its hashes among the staged ones.
        db.execute(f"CREATE INDEX IF NOT EXISTS staged_slots ON staged (audience, {SLOT_LIST})")
        rekeyed = 0
        try:
            with self.transaction():
                for table in ("members", "pending"):
                    db.execute("DELETE FROM rekey")
                    db.execute(
                        "INSERT INTO rekey (old, new) SELECT old, new FROM (SELECT t.person AS "
                        "old, st.person AS new, COUNT(*) OVER (PARTITION BY "
                        + ", ".join(f"t.{c}" for c in SLOT_COLUMNS)
                        + f") AS n FROM {table} t {db.words['probe_join']} staged st "
                        "ON st.audience = :a "
                        f"AND st.remove = 0 AND {same} WHERE t.audience = :a) AS j "
                        f"WHERE n = 1 AND old <> new AND NOT EXISTS (SELECT 1 FROM {table} t "
                        "WHERE t.audience = :a AND t.person = j.new)",
                        {"a": audience},
                    )
                    rekeyed += db.execute(
                        f"UPDATE {table} SET person = (SELECT new FROM rekey "
                        f"WHERE rekey.old = {table}.person) WHERE audience = :a "
                        "AND person IN (SELECT old FROM rekey)",
                        {"a": audience},
                    ).rowcount
                    db.execute("DELETE FROM rekey")
                _remember_keys(db, audience, keys)
        finally:
            db.execute("DROP INDEX IF EXISTS staged_slots")  # staging appends faster without
        return rekeyed, self.count_members(audience) + self.count_pending(audience)
