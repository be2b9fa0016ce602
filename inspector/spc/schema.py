"""The SPC database's schema, version by version, and how SQLite and PostgreSQL differ.

``MIGRATIONS`` lists each version's statements, in order; ``Store.migrate`` applies the ones a
database lacks (the table ``spc_schema`` keeps the versions applied), one transaction each, so
a change to the schema is a new version at the end. ``TABLES``: the tables the latest version
holds. What differs between the dialects: the column types (``DIALECT_TYPES``); a PostgreSQL
(or TimescaleDB) URL is named in messages without its password (``logs.redact_url``).
"""

from __future__ import annotations

# {bytes}, {float}: column types that differ between the dialects.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE verdicts (
                station TEXT NOT NULL, seq BIGINT NOT NULL, part_id TEXT NOT NULL,
                t_trigger {float} NOT NULL, t_verdict {float} NOT NULL,
                result TEXT NOT NULL, reason TEXT NOT NULL, class TEXT,
                defects INTEGER NOT NULL, model_id TEXT NOT NULL, origin TEXT NOT NULL,
                PRIMARY KEY (station, seq, part_id, t_trigger))""",
            "CREATE INDEX verdicts_station_time ON verdicts (station, t_verdict)",
            "CREATE INDEX verdicts_time ON verdicts (t_verdict)",
            """CREATE TABLE gate_events (
                gate TEXT NOT NULL, part_id TEXT NOT NULL, t_trigger {float} NOT NULL,
                outcome TEXT NOT NULL, reason TEXT NOT NULL, t_decided {float} NOT NULL,
                PRIMARY KEY (gate, part_id, t_trigger))""",
            "CREATE INDEX gate_events_time ON gate_events (t_decided)",
            """CREATE TABLE context (
                topic TEXT NOT NULL, ts {float} NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (topic, ts, value))""",
            "CREATE INDEX context_time ON context (ts)",
            """CREATE TABLE rejected_messages (
                topic TEXT NOT NULL, ts {float} NOT NULL, payload {bytes} NOT NULL,
                error TEXT NOT NULL)""",
        ],
    ),
    (
        2,
        [
            """CREATE TABLE alarms (
                station TEXT NOT NULL, chart TEXT NOT NULL, rule TEXT NOT NULL,
                since {float} NOT NULL, cleared {float}, detail TEXT NOT NULL,
                PRIMARY KEY (station, chart, rule, since))""",
            "CREATE INDEX alarms_time ON alarms (since)",
        ],
    ),
    (
        3,
        [
            # dead letters: messages that could not be read, or that the store refused; kept
            # with their size and (up to store.DEAD_LETTER_BYTES of) their payload
            """CREATE TABLE dead_letters (
                topic TEXT NOT NULL, ts {float} NOT NULL, kind TEXT NOT NULL,
                error TEXT NOT NULL, size BIGINT NOT NULL, payload {bytes} NOT NULL)""",
            "INSERT INTO dead_letters (topic, ts, kind, error, size, payload) "
            "SELECT topic, ts, 'unknown', error, LENGTH(payload), payload FROM rejected_messages",
            "DROP TABLE rejected_messages",
            "CREATE INDEX dead_letters_time ON dead_letters (ts)",
            # the MQTT packet id of a context message: a redelivery (same topic, value and id
            # within the broker's session) is stored once
            "ALTER TABLE context ADD COLUMN mid INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX context_topic_value ON context (topic, value, mid)",
        ],
    ),
    (
        4,
        [
            # a dead letter's payload digest (SHA-256 of all of it) and MQTT packet id: a
            # re-delivered one is kept once
            "ALTER TABLE dead_letters ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE dead_letters ADD COLUMN mid INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX dead_letters_digest ON dead_letters (topic, digest, mid)",
        ],
    ),
]
TABLES = ("verdicts", "gate_events", "context", "dead_letters", "alarms")
DIALECT_TYPES = {
    "sqlite": {"float": "REAL", "bytes": "BLOB"},
    "postgresql": {"float": "DOUBLE PRECISION", "bytes": "BYTEA"},
}
