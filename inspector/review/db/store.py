"""Every query of the review app: the one data-access module (the schema is in ``schema.py``).

SQLite by default (a file path); PostgreSQL by URL (``postgresql://user@host/db``, psycopg 3),
for a plant that reviews many stations from one server: the same schema and migrations
(``schema.MIGRATIONS``, applied in order at open). The dialects' column types and differing
statements are in ``schema.py``; placeholders, new ids and the schema version are handled
here. The label log is append-only: a label is undone by a new ``undo`` row, never by changing
or deleting the old one; ``current`` is the derived "latest label per part" that the inbox
filters on.

Why one module: the design keeps every query of the workbench in one data-access module
(docs: DESIGN.md, "Web app"); it grows with each table (users, sessions, parts, labels, runs,
promotions, login attempts), not with a second job.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .schema import DIALECT_SQL, DIALECT_TYPES, MIGRATIONS, connect_postgresql

MAX_ID = 2**63 - 1  # the largest row id either database stores; a larger one is no row


SORTS = {
    "time": "p.t DESC, p.id DESC",
    "time_asc": "p.t ASC, p.id ASC",
    "score": "p.score DESC{nulls_last}, p.id DESC",
    "score_asc": "p.score ASC{nulls_first}, p.id ASC",
}


@dataclass(frozen=True)
class PartFilter:
    """What the inbox shows; every field optional. ``reviewed``: 'yes', 'no' or ''."""

    station: str = ""
    since: float | None = None
    until: float | None = None
    reason: str = ""
    cls: str = ""
    score_min: float | None = None
    score_max: float | None = None
    model: str = ""
    reviewed: str = ""
    sort: str = "time"

    def where(self) -> tuple[str, list]:
        clauses, args = [], []
        for column, value in (
            ("p.station", self.station),
            ("p.reason", self.reason),
            ("p.class", self.cls),
            ("p.model_id", self.model),
        ):
            if value:
                clauses.append(f"{column} = ?")
                args.append(value)
        for clause, value in (
            ("p.t >= ?", self.since),
            ("p.t < ?", self.until),
            ("p.score >= ?", self.score_min),
            ("p.score <= ?", self.score_max),
        ):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if self.reviewed == "yes":
            clauses.append("p.id IN (SELECT part FROM current)")
        elif self.reviewed == "no":
            clauses.append("p.id NOT IN (SELECT part FROM current)")
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


class Store:
    """One SQLite file or one PostgreSQL database (by URL); safe to share between the server's
    threads (one lock around the one connection)."""

    def __init__(self, target: Path | str) -> None:
        self.path = str(target)
        self.lock = threading.RLock()
        self._choices: dict[str, list[str]] | None = None
        if self.path.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.db = connect_postgresql(self.path)
        else:
            self.dialect = "sqlite"
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self.db.row_factory = sqlite3.Row
        with self.lock:
            if self.dialect == "sqlite":
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()

    # -- plumbing ---------------------------------------------------------------------------
    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.dialect == "postgresql" else statement

    def _execute(self, sql: str, args=()):
        return self.db.execute(self._sql(sql), args)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self.lock:
            if self.dialect == "postgresql":
                with self.db.transaction():
                    yield
                return
            self.db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _script(self, script: str) -> list[str]:
        text = script.format(**DIALECT_TYPES[self.dialect])
        return [s.strip() for s in text.split(";") if s.strip()]

    def migrate(self) -> int:
        with self.lock:
            if self.dialect == "sqlite":
                version = self.version()
                for i, script in enumerate(MIGRATIONS[version:], start=version):
                    body = script.format(**DIALECT_TYPES["sqlite"])
                    self.db.executescript(f"BEGIN; {body}; PRAGMA user_version = {i + 1}; COMMIT;")
                return len(MIGRATIONS)
            self.db.execute("CREATE TABLE IF NOT EXISTS review_schema (version INTEGER NOT NULL)")
            with self.db.transaction():  # one server migrates; another waits, then sees it done
                self.db.execute("LOCK TABLE review_schema IN EXCLUSIVE MODE")
                version = self.version()
                for i, script in enumerate(MIGRATIONS[version:], start=version):
                    for statement in self._script(script):
                        self.db.execute(statement)
                    self.db.execute("INSERT INTO review_schema (version) VALUES (%s)", (i + 1,))
            return len(MIGRATIONS)

    def version(self) -> int:
        with self.lock:
            if self.dialect == "sqlite":
                return self.db.execute("PRAGMA user_version").fetchone()[0]
            row = self.db.execute("SELECT max(version) AS v FROM review_schema").fetchone()
            return int(row["v"] or 0)

    def close(self) -> None:
        self.db.close()

    def _all(self, sql: str, args=()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self._execute(sql, args).fetchall()]

    def _one(self, sql: str, args=()) -> dict | None:
        with self.lock:
            row = self._execute(sql, args).fetchone()
        return dict(row) if row else None

    def _run(self, sql: str, args=()) -> None:
        with self.lock:
            self._execute(sql, args)

    def _order(self, sort: str) -> str:
        return SORTS.get(sort, SORTS["time"]).format(**DIALECT_SQL[self.dialect])

    def _insert(self, sql: str, args=()) -> int:
        """An INSERT into a table with an ``id``; returns the new row's id."""
        with self.lock:
            if self.dialect == "postgresql":
                return self._execute(f"{sql} RETURNING id", args).fetchone()["id"]
            return self.db.execute(sql, args).lastrowid

    # -- users and sessions ---------------------------------------------------------------
    def put_user(self, name: str, hash_: str, role: str) -> None:
        self._run(
            "INSERT INTO users (name, hash, role, created) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, role = excluded.role",
            (name, hash_, role, time.time()),
        )

    def user(self, name: str) -> dict | None:
        return self._one("SELECT name, hash, role FROM users WHERE name = ?", (name,))

    def users(self) -> list[dict]:
        return self._all("SELECT name, role, created FROM users ORDER BY name")

    def add_session(self, token: str, user: str, csrf: str, expires: float) -> None:
        self._run("DELETE FROM sessions WHERE expires < ?", (time.time(),))
        self._run("INSERT INTO sessions VALUES (?, ?, ?, ?)", (token, user, csrf, expires))

    def session(self, token: str) -> dict | None:
        return self._one(
            'SELECT s."user", s.csrf, u.role FROM sessions s JOIN users u ON u.name = s."user" '
            "WHERE s.token = ? AND s.expires > ?",
            (token, time.time()),
        )

    def drop_session(self, token: str) -> None:
        self._run("DELETE FROM sessions WHERE token = ?", (token,))

    # -- login attempts ---------------------------------------------------------------------
    def add_login_attempt(self, name: str, address: str, ok: bool, t: float | None = None) -> None:
        self._run(
            "INSERT INTO login_attempts (t, name, address, ok) VALUES (?, ?, ?, ?)",
            (time.time() if t is None else t, name[:200], address[:100], int(ok)),
        )

    def login_failures(self, column: str, value: str, since: float) -> tuple[int, float | None]:
        """(failed attempts for this name or address since ``since`` and after its last
        successful login, the time of the latest of them)."""
        assert column in ("name", "address"), column
        value = value[:200] if column == "name" else value[:100]
        row = self._one(
            f"SELECT count(*) AS n, max(t) AS last FROM login_attempts WHERE {column} = ? "
            "AND ok = 0 AND t >= ? AND t > coalesce((SELECT max(t) FROM login_attempts "
            f"WHERE {column} = ? AND ok = 1), 0)",
            (value, since, value),
        )
        return int(row["n"]), row["last"]

    def login_attempts(self, limit: int = 50) -> list[dict]:
        return self._all("SELECT * FROM login_attempts ORDER BY id DESC LIMIT ?", (limit,))

    # -- parts ----------------------------------------------------------------------------
    def known_sidecars(self, station: str) -> set[str]:
        rows = self._all("SELECT sidecar FROM parts WHERE station = ?", (station,))
        return {r["sidecar"] for r in rows}

    def add_parts(self, rows: list[dict]) -> int:
        cols = ("station", "sidecar", "image", "part_id", "seq", "t", "result", "reason")
        cols += ("class", "score", "model_id")
        sql = DIALECT_SQL[self.dialect]["insert_ignore"].format(
            table="parts", cols=", ".join(cols), marks=", ".join("?" for _ in cols)
        )
        values = [tuple(r[c] for c in cols) for r in rows]
        with self._transaction():
            self._choices = None
            if self.dialect == "postgresql":
                with self.db.cursor() as cur:
                    cur.executemany(self._sql(sql), values)
                    return max(cur.rowcount, 0)
            before = self.db.total_changes
            self.db.executemany(sql, values)
            return self.db.total_changes - before

    def part(self, pid: int) -> dict | None:
        if not _valid_id(pid):
            return None
        return self._one(
            "SELECT p.*, c.label AS label, c.label_id AS label_id, c.disagrees AS disagrees "
            "FROM parts p LEFT JOIN current c ON c.part = p.id WHERE p.id = ?",
            (pid,),
        )

    def parts(self, f: PartFilter, offset: int, limit: int) -> list[dict]:
        where, args = f.where()
        return self._all(
            "SELECT p.*, c.label AS label, c.disagrees AS disagrees FROM parts p "
            f"LEFT JOIN current c ON c.part = p.id{where} "
            f"ORDER BY {self._order(f.sort)} LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )

    def count(self, f: PartFilter) -> int:
        where, args = f.where()
        return self._one(f"SELECT count(*) AS n FROM parts p{where}", args)["n"]

    def neighbours(self, f: PartFilter, pid: int) -> tuple[int | None, int | None]:
        """The parts before and after ``pid`` in the filtered, sorted list."""
        part = self.part(pid)
        if part is None:
            return None, None
        where, args = f.where()
        key = {"time": ("t", -1), "time_asc": ("t", 1), "score": ("score", -1)}
        col, direction = key.get(f.sort, ("score", 1))
        value = part[col] if part[col] is not None else 0.0
        out = []
        for sign in (-1, 1):  # previous, next in display order
            after = sign * direction > 0
            op = ">" if after else "<"
            order = "ASC" if after else "DESC"
            cond = f"(p.{col} {op} ? OR (p.{col} = ? AND p.id {op} ?))"  # ties: by id
            joined = f"{where} AND {cond}" if where else f" WHERE {cond}"
            row = self._one(
                f"SELECT p.id FROM parts p{joined} ORDER BY p.{col} {order}, p.id {order} LIMIT 1",
                (*args, value, value, pid),
            )
            out.append(row["id"] if row else None)
        return out[0], out[1]

    def choices(self) -> dict[str, list[str]]:
        """The values the inbox's filter menus offer (kept until new parts arrive)."""
        with self.lock:
            if self._choices is None:
                self._choices = self._distinct()
            return self._choices

    def _distinct(self) -> dict[str, list[str]]:
        out = {}
        for key, col in (("station", "station"), ("reason", "reason"), ("cls", "class")):
            out[key] = [r["v"] for r in self._all(f"SELECT DISTINCT {col} AS v FROM parts")]
        out["model"] = [r["v"] for r in self._all("SELECT DISTINCT model_id AS v FROM parts")]
        return {k: sorted(v for v in vals if v) for k, vals in out.items()}

    # -- the dashboard ----------------------------------------------------------------------
    def station_names(self) -> list[str]:
        return [r["station"] for r in self._all("SELECT DISTINCT station FROM parts ORDER BY 1")]

    def newest_t(self, station: str) -> float | None:
        return self._one("SELECT max(t) AS t FROM parts WHERE station = ?", (station,))["t"]

    def seq_results(self, station: str, since: float) -> list[dict]:
        """(seq, result) of the station's kept parts since ``since``, in line order."""
        return self._all(
            "SELECT seq, result FROM parts WHERE station = ? AND t >= ? ORDER BY t, id",
            (station, since),
        )

    def reject_reasons(self, station: str, since: float) -> dict[str, int]:
        rows = self._all(
            "SELECT reason AS k, count(*) AS n FROM parts WHERE station = ? AND t >= ? "
            "AND result = 'fail' GROUP BY reason ORDER BY count(*) DESC, reason",
            (station, since),
        )
        return {r["k"]: r["n"] for r in rows}

    def latest_parts(self, station: str, n: int) -> list[dict]:
        return self._all(
            "SELECT id, part_id, t, result, reason, class, score, model_id FROM parts "
            "WHERE station = ? ORDER BY t DESC, id DESC LIMIT ?",
            (station, n),
        )

    def scored_parts(self, station: str = "") -> list[dict]:
        """Every recorded part's score, line result and label in force (the slider's parts)."""
        where, args = ("WHERE p.station = ?", (station,)) if station else ("", ())
        return self._all(
            "SELECT p.score AS score, p.result AS result, c.label AS label FROM parts p "
            f"LEFT JOIN current c ON c.part = p.id {where}",
            args,
        )

    # -- regions --------------------------------------------------------------------------
    def add_region(self, part: int, user: str, box: tuple, label: str | None) -> int:
        x, y, w, h = box
        return self._insert(
            'INSERT INTO regions (part, "user", t, x, y, w, h, label) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (part, user, time.time(), x, y, w, h, label),
        )

    def regions(self, part: int) -> list[dict]:
        """The part's boxes in force, oldest first."""
        return self._all(
            'SELECT id, "user", t, x, y, w, h, label FROM regions '
            "WHERE part = ? AND removed IS NULL ORDER BY id",
            (part,),
        )

    def remove_region(self, part: int, rid: int) -> bool:
        if not _valid_id(rid):
            return False
        found = self._one(
            "SELECT id FROM regions WHERE id = ? AND part = ? AND removed IS NULL", (rid, part)
        )
        if found is None:
            return False
        self._run("UPDATE regions SET removed = ? WHERE id = ?", (time.time(), rid))
        return True

    # -- labels ---------------------------------------------------------------------------
    def add_label(self, part: dict, user: str, label: str, disagrees: str | None) -> int:
        with self._transaction():
            lid = self._insert(
                'INSERT INTO labels (part, "user", t, kind, label, station, recording, '
                "line_result, line_class) VALUES (?, ?, ?, 'label', ?, ?, ?, ?, ?)",
                (
                    part["id"],
                    user,
                    time.time(),
                    label,
                    part["station"],
                    part["sidecar"],
                    part["result"],
                    part["class"],
                ),
            )
            self._run(
                "INSERT INTO current (part, label_id, label, disagrees) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (part) DO UPDATE SET label_id = excluded.label_id, "
                "label = excluded.label, disagrees = excluded.disagrees",
                (part["id"], lid, label, disagrees),
            )
            return lid

    def label(self, lid: int) -> dict | None:
        if not _valid_id(lid):
            return None
        return self._one("SELECT * FROM labels WHERE id = ?", (lid,))

    def last_label_by(self, user: str) -> dict | None:
        """The user's latest label that is still in force (what "undo" takes back)."""
        return self._one(
            "SELECT l.* FROM labels l JOIN current c ON c.label_id = l.id "
            'WHERE l."user" = ? ORDER BY l.id DESC LIMIT 1',
            (user,),
        )

    def undo(self, label: dict, user: str, previous: dict | None, disagrees: str | None) -> int:
        """Log an undo of ``label``; the part's label becomes ``previous`` (or none)."""
        with self._transaction():
            uid = self._insert(
                'INSERT INTO labels (part, "user", t, kind, undoes, station, recording, '
                "line_result, line_class) VALUES (?, ?, ?, 'undo', ?, ?, ?, ?, ?)",
                (
                    label["part"],
                    user,
                    time.time(),
                    label["id"],
                    label["station"],
                    label["recording"],
                    label["line_result"],
                    label["line_class"],
                ),
            )
            if previous is None:
                self._run("DELETE FROM current WHERE part = ?", (label["part"],))
            else:
                self._run(
                    "UPDATE current SET label_id = ?, label = ?, disagrees = ? WHERE part = ?",
                    (previous["id"], previous["label"], disagrees, label["part"]),
                )
            return uid

    def label_in_force_before(self, label: dict) -> dict | None:
        """The label of the same part that ``label`` replaced, if it is not undone itself."""
        rows = self._all(
            "SELECT * FROM labels WHERE part = ? AND id < ? ORDER BY id",
            (label["part"], label["id"]),
        )
        stack: list[dict] = []
        for r in rows:
            if r["kind"] == "label":
                stack.append(r)
            else:
                stack = [s for s in stack if s["id"] != r["undoes"]]
        return stack[-1] if stack else None

    def label_log(self, part: int | None = None, limit: int = 50) -> list[dict]:
        where, args = ("WHERE part = ?", (part,)) if part is not None else ("", ())
        return self._all(f"SELECT * FROM labels {where} ORDER BY id DESC LIMIT ?", (*args, limit))

    def disagreements(self) -> dict[str, int]:
        rows = self._all(
            "SELECT disagrees AS k, count(*) AS n FROM current "
            "WHERE disagrees IS NOT NULL GROUP BY disagrees"
        )
        return {r["k"]: r["n"] for r in rows}

    def label_counts(self) -> dict[str, int]:
        rows = self._all("SELECT label AS k, count(*) AS n FROM current GROUP BY label")
        return {r["k"]: r["n"] for r in rows}

    def labels_per_day(self) -> list[dict]:
        return self._all(
            f"SELECT {DIALECT_SQL[self.dialect]['day']} AS day, "
            "sum(CASE WHEN kind = 'label' THEN 1 ELSE 0 END) AS labels, "
            "sum(CASE WHEN kind = 'undo' THEN 1 ELSE 0 END) AS undos "
            "FROM labels GROUP BY day ORDER BY day"
        )

    # -- training runs --------------------------------------------------------------------
    def add_run(self, name: str, out: str, user: str, epochs: int) -> int:
        return self._insert(
            'INSERT INTO runs (name, out, "user", started, epochs, status) '
            "VALUES (?, ?, ?, ?, ?, 'starting')",
            (name, out, user, time.time(), epochs),
        )

    def set_run(self, rid: int, **fields) -> None:
        allowed = {"pid", "status", "ended", "returncode"}
        assert set(fields) <= allowed, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), rid))

    def run(self, rid: int) -> dict | None:
        if not _valid_id(rid):
            return None
        return self._one("SELECT * FROM runs WHERE id = ?", (rid,))

    def runs(self, limit: int = 20) -> list[dict]:
        return self._all("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))

    def active_runs(self) -> list[dict]:
        return self._all("SELECT * FROM runs WHERE status IN ('starting', 'running')")

    # -- promotions -----------------------------------------------------------------------
    def add_promotion(self, station, model, folder, previous, user, verify) -> int:
        return self._insert(
            'INSERT INTO promotions (station, model, folder, previous, "user", t, verify) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (station, model, folder, previous, user, time.time(), verify),
        )

    def promotions(self, limit: int = 20) -> list[dict]:
        return self._all("SELECT * FROM promotions ORDER BY id DESC LIMIT ?", (limit,))

    def start_promotion(self, station, model, folder, previous, user, kind="promote") -> int:
        """A promotion row in state 'running' (its worker fills in the rest)."""
        return self._insert(
            'INSERT INTO promotions (station, model, folder, previous, "user", t, verify, '
            "status, kind) VALUES (?, ?, ?, ?, ?, ?, '', 'running', ?)",
            (station, model, folder, previous, user, time.time(), kind),
        )

    def set_promotion(self, pid: int, **fields) -> None:
        allowed = {"status", "verify", "via", "ended", "previous"}
        assert set(fields) <= allowed, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE promotions SET {sets} WHERE id = ?", (*fields.values(), pid))

    def promotion(self, pid: int) -> dict | None:
        if not _valid_id(pid):
            return None
        return self._one("SELECT * FROM promotions WHERE id = ?", (pid,))

    def running_promotions(self) -> list[dict]:
        return self._all("SELECT * FROM promotions WHERE status = 'running' ORDER BY id")


def _valid_id(value) -> bool:
    return isinstance(value, int) and 0 < value <= MAX_ID
