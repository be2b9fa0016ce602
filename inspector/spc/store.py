"""The one data-access module of the SPC room: every query lives here (the schema: schema.py).

SQLite by default (a file path: WAL journal, indexes on station and time, retention by age);
PostgreSQL (or TimescaleDB) by URL, ``postgresql://user@host/db``, with the same schema.
The schema is versioned (``schema.py``: each version's statements, and the column types that
differ between the dialects); ``Store`` applies the ones a database lacks, in order, in one
transaction each.

The ingest writes each batch of messages in one transaction (``write``): verdicts, gate events,
context and dead letters together, all or nothing. A PostgreSQL connection that broke (the
server restarted) is opened again on the next statement.

Why one module: every query of the SPC room lives here (one data-access module, as the
design asks); the schema it queries is in ``schema.py``.

A verdict is one row per part: the key is station + seq + part id + trigger time (the
contract's part identity: a PLC id that came round after a power cycle, with a station that
restarted its seq, is a new part), so a QoS 1 redelivery, a resend after a broker restart or
a sidecar read twice changes nothing. A dead letter is kept once: a re-delivery (the same
topic, payload and MQTT packet id within the broker's session window) is not kept again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InspectorError
from ..logs import redact_url
from .schema import DIALECT_TYPES, MIGRATIONS, TABLES

log = logging.getLogger(__name__)

DEAD_LETTER_BYTES = 64 * 1024  # of a dead letter's payload kept (its size is kept in full)


@dataclass(frozen=True, slots=True)
class VerdictRow:
    station: str
    seq: int
    part_id: str
    t_trigger: float
    t_verdict: float
    result: str
    reason: str
    label: str | None
    defects: int
    model_id: str
    origin: str = "mqtt"  # mqtt | sidecar


@dataclass(frozen=True, slots=True)
class GateRow:
    gate: str
    part_id: str
    t_trigger: float
    outcome: str
    reason: str
    t_decided: float


@dataclass(frozen=True, slots=True)
class ContextRow:
    """A context message: ``mid`` is its MQTT packet id (0 for QoS 0); ``retained``: the
    broker's current value, handed over on (re)subscribing."""

    topic: str
    ts: float
    value: str
    mid: int = 0
    retained: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    ts: float
    kind: str  # verdict | gate | context
    error: str
    payload: bytes
    mid: int = 0  # its MQTT packet id (0 for QoS 0): a re-delivery has the same


class Store:
    """A connection to the SPC database; thread-safe (one lock around the connection)."""

    def __init__(self, target: str | Path, busy_timeout_s: float = 5.0) -> None:
        """``busy_timeout_s``: how long a SQLite statement waits for another process's lock
        before it fails (and the ingest retries it)."""
        text = str(target)
        self._url = text
        self._lock = threading.RLock()
        if text.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            try:
                import psycopg
            except ImportError:
                raise InspectorError(
                    "a PostgreSQL store needs psycopg: pip install 'defect-inspector[spc]'"
                ) from None
            try:
                self._db = psycopg.connect(text, autocommit=False)
            except psycopg.Error as exc:
                raise InspectorError(f"cannot connect to {redact_url(text)}: {exc}") from None
            self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        else:
            self.dialect = "sqlite"
            path = Path(text.removeprefix("sqlite:///"))
            if str(path) != ":memory:":
                path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(
                    str(path), timeout=busy_timeout_s, check_same_thread=False
                )
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise InspectorError(f"cannot open the SPC database {path}: {exc}") from None
            self._errors = (sqlite3.Error,)
        self.migrate()

    def _connected(self):
        """The connection, opened again when a PostgreSQL server dropped it (a restart)."""
        if self.dialect == "postgresql" and (self._db.closed or self._db.broken):
            import psycopg

            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db = psycopg.connect(self._url, autocommit=False, connect_timeout=5)
            log.info("reconnected to the SPC database %s", redact_url(self._url))
        return self._db

    def _rollback(self) -> None:
        """Roll back what this transaction wrote; a connection that is gone has nothing to
        roll back (the server discards the transaction)."""
        with contextlib.suppress(*self._errors):
            self._db.rollback()

    # -- plumbing --------------------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        statement = statement.format(**DIALECT_TYPES[self.dialect])
        return statement.replace("?", "%s") if self.dialect == "postgresql" else statement

    def _run(self, statement: str, params: Sequence = ()):
        cur = self._connected().cursor()
        try:
            cur.execute(self._sql(statement), params)
        except self._errors:
            self._rollback()  # PostgreSQL refuses every statement of a failed transaction
            raise
        return cur

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def schema_version(self) -> int:
        with self._lock:
            self._run("CREATE TABLE IF NOT EXISTS spc_schema (version INTEGER NOT NULL)")
            row = self._run("SELECT MAX(version) FROM spc_schema").fetchone()
            self._db.commit()
            return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply the migrations this database lacks; returns the version it is at."""
        current = self.schema_version()
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise ConfigError(
                f"the SPC database is at schema version {current}, newer than this program "
                f"knows ({latest}): upgrade defect-inspector"
            )
        with self._lock:
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                try:
                    for st in statements:
                        self._run(st)
                    self._run("INSERT INTO spc_schema (version) VALUES (?)", (version,))
                    self._db.commit()
                except self._errors:
                    self._rollback()
                    raise
                log.info("SPC database migrated to schema version %d", version)
        return latest

    # -- writes ----------------------------------------------------------------------------
    def write(
        self,
        verdicts: Iterable[VerdictRow] = (),
        gates: Iterable[GateRow] = (),
        context: Iterable[ContextRow] = (),
        dead: Iterable[DeadLetter] = (),
        context_window_s: float = 3600.0,
    ) -> list[VerdictRow]:
        """Store one batch in one transaction (all of it, or, on any error, none of it);
        returns the verdicts that were new (not duplicates).

        A dead letter is a re-delivery, and not kept again, when the same topic, payload and
        packet id were kept within ``context_window_s``.

        A context message is a redelivery, and not stored again, when the same topic, value
        and packet id were stored within ``context_window_s`` (the broker's session); a
        retained one when it is the topic's last stored value."""
        new: list[VerdictRow] = []
        with self._lock:
            cur = self._connected().cursor()
            try:
                for r in verdicts:
                    cur.execute(self._sql(_INSERT_VERDICT), _verdict_params(r))
                    if cur.rowcount == 1:
                        new.append(r)
                for g in gates:
                    cur.execute(self._sql(_INSERT_GATE), _gate_params(g))
                for c in context:
                    if c.retained:
                        cur.execute(
                            self._sql(_INSERT_CONTEXT_UNLESS_LAST),
                            (c.topic, c.ts, c.value, c.mid, c.topic, c.value, c.topic),
                        )
                    elif c.mid:
                        cur.execute(
                            self._sql(_INSERT_CONTEXT_UNLESS_SEEN),
                            (
                                c.topic,
                                c.ts,
                                c.value,
                                c.mid,
                                c.topic,
                                c.value,
                                c.mid,
                                c.ts - context_window_s,
                            ),
                        )
                    else:
                        cur.execute(self._sql(_INSERT_CONTEXT), (c.topic, c.ts, c.value, c.mid))
                for d in dead:
                    if d.mid:
                        cur.execute(
                            self._sql(_INSERT_DEAD_ONCE),
                            (*_dead_params(d), d.topic, _digest(d), d.mid, d.ts - context_window_s),
                        )
                    else:
                        cur.execute(self._sql(_INSERT_DEAD), _dead_params(d))
                self._db.commit()
            except BaseException:
                self._rollback()
                raise
        return new

    def writable(self) -> bool:
        """Whether the database takes a write now (a probe that is rolled back)."""
        with self._lock:
            try:
                cur = self._connected().cursor()
                cur.execute(
                    self._sql(_INSERT_DEAD), _dead_params(DeadLetter("probe", 0.0, "", "", b""))
                )
                self._db.rollback()
                return True
            except self._errors:
                self._rollback()
                return False

    def add_verdicts(self, rows: Iterable[VerdictRow]) -> list[VerdictRow]:
        """Insert in one transaction; returns the rows that were new (not duplicates)."""
        return self.write(verdicts=rows)

    def add_gate_events(self, rows: Iterable[GateRow]) -> int:
        rows = list(rows)
        self.write(gates=rows)
        return len(rows)

    def add_context(self, rows: Iterable[tuple[str, float, str]]) -> int:
        rows = [ContextRow(*r) for r in rows]
        self.write(context=rows)
        return len(rows)

    def add_dead_letters(self, rows: Iterable[DeadLetter]) -> int:
        """Messages that could not be read (or that the store refused) are kept, with why."""
        rows = list(rows)
        self.write(dead=rows)
        return len(rows)

    def open_alarm(self, station: str, chart: str, rule: str, since: float, detail: str) -> None:
        self._insert_many(
            "INSERT INTO alarms (station, chart, rule, since, cleared, detail) "
            "VALUES (?,?,?,?,NULL,?) ON CONFLICT DO NOTHING",
            [(station, chart, rule, since, detail)],
        )

    def clear_alarm(self, station: str, chart: str, rule: str, since: float, when: float) -> None:
        self._insert_many(
            "UPDATE alarms SET cleared = ? WHERE station = ? AND chart = ? AND rule = ? "
            "AND since = ?",
            [(when, station, chart, rule, since)],
        )

    def _insert_many(self, statement: str, params: list[tuple]) -> int:
        if not params:
            return 0
        with self._lock:
            cur = self._connected().cursor()
            try:
                n = 0
                for p in params:
                    cur.execute(self._sql(statement), p)
                    n += max(cur.rowcount, 0)
                self._db.commit()
            except BaseException:
                self._rollback()
                raise
        return n

    def prune(self, older_than_s: float, now: float | None = None) -> int:
        """Retention: delete what is older than ``older_than_s`` seconds; rows deleted."""
        cutoff = (now if now is not None else time.time()) - older_than_s
        n = 0
        with self._lock:
            for table, col in (
                ("verdicts", "t_verdict"),
                ("gate_events", "t_decided"),
                ("context", "ts"),
                ("dead_letters", "ts"),
                ("alarms", "since"),
            ):
                n += max(self._run(f"DELETE FROM {table} WHERE {col} < ?", (cutoff,)).rowcount, 0)
            self._db.commit()
        return n

    # -- reads -----------------------------------------------------------------------------
    def verdicts(
        self, station: str | None = None, t_from: float = 0.0, t_to: float = float("inf")
    ) -> dict[str, np.ndarray]:
        """Columns (station, seq, part_id, t_verdict, result, reason, class, defects) ordered by
        time, as numpy arrays."""
        where, params = "t_verdict >= ? AND t_verdict < ?", [t_from, min(t_to, 1e18)]
        if station is not None:
            where += " AND station = ?"
            params.append(station)
        with self._lock:
            rows = self._run(
                "SELECT station, seq, part_id, t_verdict, result, reason, class, defects "
                f"FROM verdicts WHERE {where} ORDER BY t_verdict, station, seq",
                params,
            ).fetchall()
            self._db.commit()
        cols = ("station", "seq", "part_id", "t_verdict", "result", "reason", "class", "defects")
        out = {c: np.array([r[i] for r in rows], dtype=object) for i, c in enumerate(cols)}
        out["t_verdict"] = out["t_verdict"].astype(float)
        out["seq"] = out["seq"].astype(np.int64)
        out["defects"] = out["defects"].astype(np.int64)
        return out

    def recent(self, station: str, limit: int) -> list[VerdictRow]:
        """The last ``limit`` verdicts of a station, oldest first (to prime the live charts)."""
        with self._lock:
            rows = self._run(
                "SELECT station, seq, part_id, t_trigger, t_verdict, result, reason, class, "
                "defects, model_id, origin FROM verdicts WHERE station = ? "
                "ORDER BY t_verdict DESC LIMIT ?",
                (station, limit),
            ).fetchall()
            self._db.commit()
        return [VerdictRow(*r) for r in reversed(rows)]

    def keys(self, station: str) -> set[tuple[int, str, float]]:
        """(seq, part_id, t_trigger) of every stored verdict of a station (tests, audits)."""
        with self._lock:
            rows = self._run(
                "SELECT seq, part_id, t_trigger FROM verdicts WHERE station = ?", (station,)
            ).fetchall()
            self._db.commit()
        return {(int(a), b, float(c)) for a, b, c in rows}

    def count(self, table: str = "verdicts") -> int:
        if table not in TABLES:
            raise ValueError(table)
        with self._lock:
            (n,) = self._run(f"SELECT COUNT(*) FROM {table}").fetchone()
            self._db.commit()
        return int(n)

    def stations(self) -> list[str]:
        with self._lock:
            rows = self._run("SELECT DISTINCT station FROM verdicts ORDER BY station").fetchall()
            self._db.commit()
        return [r[0] for r in rows]

    def context(self, t_from: float, t_to: float) -> list[tuple[str, float, str]]:
        """Context messages in a time range, with the last value of each topic before it
        first (so changes can be told from repeats)."""
        with self._lock:
            before = self._run(
                "SELECT c.topic, c.ts, c.value FROM context c JOIN (SELECT topic, MAX(ts) AS ts "
                "FROM context WHERE ts < ? GROUP BY topic) last ON c.topic = last.topic "
                "AND c.ts = last.ts",
                (t_from,),
            ).fetchall()
            rows = self._run(
                "SELECT topic, ts, value FROM context WHERE ts >= ? AND ts < ? ORDER BY ts",
                (t_from, t_to),
            ).fetchall()
            self._db.commit()
        return [(a, float(b), c) for a, b, c in sorted(before, key=lambda r: r[1]) + rows]

    def alarms(self, t_from: float, t_to: float) -> list[tuple]:
        with self._lock:
            rows = self._run(
                "SELECT station, chart, rule, since, cleared, detail FROM alarms "
                "WHERE since >= ? AND since < ? ORDER BY since",
                (t_from, t_to),
            ).fetchall()
            self._db.commit()
        return rows


_INSERT_VERDICT = (
    "INSERT INTO verdicts (station, seq, part_id, t_trigger, t_verdict, result, reason, "
    "class, defects, model_id, origin) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_GATE = (
    "INSERT INTO gate_events (gate, part_id, t_trigger, outcome, reason, t_decided) "
    "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_CONTEXT = (
    "INSERT INTO context (topic, ts, value, mid) VALUES (?,?,?,?) ON CONFLICT DO NOTHING"
)
_CONTEXT_ROW = "SELECT CAST(? AS TEXT), CAST(? AS {float}), CAST(? AS TEXT), CAST(? AS INTEGER) "
_INSERT_CONTEXT_UNLESS_SEEN = (
    "INSERT INTO context (topic, ts, value, mid) " + _CONTEXT_ROW + "WHERE NOT EXISTS "
    "(SELECT 1 FROM context WHERE topic = ? AND value = ? AND mid = ? AND ts >= ?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_CONTEXT_UNLESS_LAST = (
    "INSERT INTO context (topic, ts, value, mid) " + _CONTEXT_ROW + "WHERE NOT EXISTS "
    "(SELECT 1 FROM context WHERE topic = ? AND value = ? AND ts = "
    "(SELECT MAX(ts) FROM context WHERE topic = ?)) ON CONFLICT DO NOTHING"
)
_INSERT_DEAD = (
    "INSERT INTO dead_letters (topic, ts, kind, error, size, payload, digest, mid) "
    "VALUES (?,?,?,?,?,?,?,?)"
)
_INSERT_DEAD_ONCE = (
    "INSERT INTO dead_letters (topic, ts, kind, error, size, payload, digest, mid) "
    "SELECT CAST(? AS TEXT), CAST(? AS {float}), CAST(? AS TEXT), CAST(? AS TEXT), "
    "CAST(? AS BIGINT), CAST(? AS {bytes}), CAST(? AS TEXT), CAST(? AS INTEGER) WHERE NOT EXISTS "
    "(SELECT 1 FROM dead_letters WHERE topic = ? AND digest = ? AND mid = ? AND ts >= ?)"
)


def _verdict_params(r: VerdictRow) -> tuple:
    return (
        r.station,
        r.seq,
        r.part_id,
        r.t_trigger,
        r.t_verdict,
        r.result,
        r.reason,
        r.label,
        r.defects,
        r.model_id,
        r.origin,
    )


def _gate_params(g: GateRow) -> tuple:
    return (g.gate, g.part_id, g.t_trigger, g.outcome, g.reason, g.t_decided)


def _digest(d: DeadLetter) -> str:
    return hashlib.sha256(d.payload).hexdigest()


def _dead_params(d: DeadLetter) -> tuple:
    return (
        d.topic,
        d.ts,
        d.kind,
        d.error,
        len(d.payload),
        d.payload[:DEAD_LETTER_BYTES],
        _digest(d),
        d.mid,
    )
