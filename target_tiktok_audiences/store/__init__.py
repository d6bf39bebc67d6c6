"""The membership store: per audience, each person's identifier hashes as TikTok confirmed them.

Only hashes live here (raw 32- or 16-byte digests, and a 16-byte digest of the record key), never
a raw identifier. A run stages what its input says (`staged`), plans the difference against the
confirmed members (`plan`), and records each change only once TikTok confirmed it (`confirm`).
Staging and planning are SQL over temporary tables, so memory stays flat however large the
audience. On SQLite the plan is in a private work file of the run, from which worker processes
read the batches they build request bodies of.

The store lives in a SQLite file (one machine) or a PostgreSQL database (shared by workers).
All of its SQL is in this package, written once; `backend.py` says what differs between the
two. Each module is one part of `MembershipStore`, all over the one connection `connection.py`
opens; a module uses only those below it.
"""

from __future__ import annotations

from target_tiktok_audiences.store.audiences import AudienceRow
from target_tiktok_audiences.store.backend import StoreMissingError
from target_tiktok_audiences.store.compose import Composition
from target_tiktok_audiences.store.copy import Copying, copy_store
from target_tiktok_audiences.store.erase import AudienceErasure, Erasure, ErasurePlan, hash_text
from target_tiktok_audiences.store.history import History, HistoryEntry
from target_tiktok_audiences.store.keys import KeyPropertiesChangedError, Keys
from target_tiktok_audiences.store.merging import MergedPlan, Merging
from target_tiktok_audiences.store.plan import Planning, PlanRows, PlanSummary
from target_tiktok_audiences.store.schema import SCHEMA_VERSION
from target_tiktok_audiences.store.sources import SourceRow, Sources
from target_tiktok_audiences.store.staged import LEAVES, NO_CONSENT, STAYS, Staged

__all__ = [
    "LEAVES",
    "NO_CONSENT",
    "SCHEMA_VERSION",
    "STAYS",
    "AudienceErasure",
    "AudienceRow",
    "ErasurePlan",
    "HistoryEntry",
    "KeyPropertiesChangedError",
    "MembershipStore",
    "MergedPlan",
    "PlanRows",
    "PlanSummary",
    "SourceRow",
    "Staged",
    "StoreMissingError",
    "copy_store",
    "hash_text",
]


class MembershipStore(Keys, Planning, Composition, Sources, Merging, History, Copying, Erasure):
    """Confirmed membership in SQLite or PostgreSQL, one connection per run.

    Opened with `MembershipStore.open` (see `Connection`); its parts: audiences, staging,
    sources, composition, planning, confirmation, merged sends, key changes, history, copying
    and erasure.
    """
