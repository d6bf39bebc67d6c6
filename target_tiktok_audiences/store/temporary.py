"""The run's temporary tables: what it stages, plans and looks up, gone when it closes.

Made, in the backend's words (`schema.in_words`), on every connection a run opens. `plan` and
`withheld` are in the run's work file where the backend has one (SQLite), for worker processes
(`PlanRows`, `FileReader`). A plan row's `kept`: a bit per slot whose hash is not sent (another
person keeps it, or an earlier row sends it).
"""

TEMP_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS staged (
    seq {row_order},
    audience INTEGER NOT NULL,
    person {blob} NOT NULL,
    remove INTEGER NOT NULL,
    no_consent INTEGER NOT NULL DEFAULT 0,
    fresh INTEGER NOT NULL DEFAULT 1,
    split TEXT,
    {slots}
);
CREATE {work_table} IF NOT EXISTS {work}plan (
    seq {id_pk},
    audience INTEGER NOT NULL,
    action TEXT NOT NULL,
    person {blob} NOT NULL,
    {slots},
    kept INTEGER NOT NULL DEFAULT 0
);
CREATE TEMP TABLE IF NOT EXISTS rekey (
    old {blob} PRIMARY KEY,
    new {blob} NOT NULL
);
CREATE {work_table} IF NOT EXISTS {work}withheld (
    slot INTEGER NOT NULL,
    hash {blob} NOT NULL,
    tier INTEGER NOT NULL,
    PRIMARY KEY (slot, hash)
);
CREATE TEMP TABLE IF NOT EXISTS fresh (
    source INTEGER NOT NULL,
    person {blob} NOT NULL,
    PRIMARY KEY (source, person)
);
CREATE TEMP TABLE IF NOT EXISTS matched (
    source INTEGER NOT NULL,
    person {blob} NOT NULL,
    {slots},
    PRIMARY KEY (source, person)
);
CREATE TEMP TABLE IF NOT EXISTS repeated (
    hash {blob} PRIMARY KEY,
    first INTEGER NOT NULL
);
CREATE TEMP TABLE IF NOT EXISTS candidates (
    hash {blob} PRIMARY KEY
);
CREATE TEMP TABLE IF NOT EXISTS diff (
    person {blob} NOT NULL,
    joined INTEGER NOT NULL,
    fresh INTEGER NOT NULL,
    {slots},
    {old_slots}
);
"""
