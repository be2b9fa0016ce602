"""Every SQL statement of the review app: the one data-access module (SQLite).

The schema is versioned: ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``
(``PRAGMA user_version``), applied in order at open. The label log is append-only: a label
is undone by a new ``undo`` row, never by changing or deleting the old one; ``current``
is the derived "latest label per part" that the inbox filters on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS = [
    """
    CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL,
                        created REAL NOT NULL);
    CREATE TABLE sessions (token TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
                           csrf TEXT NOT NULL, expires REAL NOT NULL);
    CREATE TABLE parts (
        id INTEGER PRIMARY KEY, station TEXT NOT NULL, sidecar TEXT NOT NULL, image TEXT NOT NULL,
        part_id TEXT NOT NULL, seq INTEGER, t REAL NOT NULL, result TEXT NOT NULL,
        reason TEXT NOT NULL, class TEXT, score REAL, model_id TEXT NOT NULL,
        UNIQUE (station, sidecar));
    CREATE INDEX parts_t ON parts (t);
    CREATE INDEX parts_station_t ON parts (station, t);
    CREATE INDEX parts_score ON parts (score);
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY, part INTEGER NOT NULL REFERENCES parts(id), user TEXT NOT NULL,
        t REAL NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')),
        label TEXT, undoes INTEGER REFERENCES labels(id), station TEXT NOT NULL,
        recording TEXT NOT NULL, line_result TEXT NOT NULL, line_class TEXT);
    CREATE INDEX labels_part ON labels (part);
    CREATE TABLE current (part INTEGER PRIMARY KEY REFERENCES parts(id),
                          label_id INTEGER NOT NULL, label TEXT NOT NULL,
                          disagrees TEXT);
    CREATE INDEX current_label ON current (label);
    CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, out TEXT NOT NULL,
                       pid INTEGER, user TEXT NOT NULL, started REAL NOT NULL, ended REAL,
                       epochs INTEGER NOT NULL, status TEXT NOT NULL, returncode INTEGER);
    CREATE TABLE promotions (id INTEGER PRIMARY KEY, station TEXT NOT NULL, model TEXT NOT NULL,
                             folder TEXT NOT NULL, previous TEXT, user TEXT NOT NULL,
                             t REAL NOT NULL, verify TEXT NOT NULL);
    """,
    # the inbox's other filters, each with the default sort (newest first) behind it
    """
    CREATE INDEX parts_model_t ON parts (model_id, t);
    CREATE INDEX parts_reason_t ON parts (reason, t);
    CREATE INDEX parts_class_t ON parts (class, t);
    CREATE INDEX parts_station_score ON parts (station, score);
    """,
]

SORTS = {
    "time": "p.t DESC, p.id DESC",
    "time_asc": "p.t ASC, p.id ASC",
    "score": "p.score DESC, p.id DESC",
    "score_asc": "p.score ASC, p.id ASC",
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
    """One SQLite file; safe to share between the server's threads (one lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self._choices: dict[str, list[str]] | None = None
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()

    def migrate(self) -> int:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        for i, script in enumerate(MIGRATIONS[version:], start=version):
            self.db.executescript(f"BEGIN; {script}; PRAGMA user_version = {i + 1}; COMMIT;")
        return len(MIGRATIONS)

    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def _all(self, sql: str, args=()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def _one(self, sql: str, args=()) -> dict | None:
        with self.lock:
            row = self.db.execute(sql, args).fetchone()
        return dict(row) if row else None

    def _run(self, sql: str, args=()) -> int:
        with self.lock:
            cur = self.db.execute(sql, args)
            return cur.lastrowid

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
            "SELECT s.user, s.csrf, u.role FROM sessions s JOIN users u ON u.name = s.user "
            "WHERE s.token = ? AND s.expires > ?",
            (token, time.time()),
        )

    def drop_session(self, token: str) -> None:
        self._run("DELETE FROM sessions WHERE token = ?", (token,))

    # -- parts ----------------------------------------------------------------------------
    def known_sidecars(self, station: str) -> set[str]:
        with self.lock:
            rows = self.db.execute("SELECT sidecar FROM parts WHERE station = ?", (station,))
            return {r[0] for r in rows}

    def add_parts(self, rows: list[dict]) -> int:
        cols = ("station", "sidecar", "image", "part_id", "seq", "t", "result", "reason")
        cols += ("class", "score", "model_id")
        sql = (
            f"INSERT OR IGNORE INTO parts ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})"
        )
        with self.lock:
            self.db.execute("BEGIN")
            before = self.db.total_changes
            self.db.executemany(sql, [tuple(r[c] for c in cols) for r in rows])
            self.db.execute("COMMIT")
            self._choices = None
            return self.db.total_changes - before

    def part(self, pid: int) -> dict | None:
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
            f"ORDER BY {SORTS.get(f.sort, SORTS['time'])} LIMIT ? OFFSET ?",
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

    # -- labels ---------------------------------------------------------------------------
    def add_label(self, part: dict, user: str, label: str, disagrees: str | None) -> int:
        with self.lock:
            self.db.execute("BEGIN")
            lid = self.db.execute(
                "INSERT INTO labels (part, user, t, kind, label, station, recording, "
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
            ).lastrowid
            self.db.execute(
                "INSERT INTO current (part, label_id, label, disagrees) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (part) DO UPDATE SET label_id = excluded.label_id, "
                "label = excluded.label, disagrees = excluded.disagrees",
                (part["id"], lid, label, disagrees),
            )
            self.db.execute("COMMIT")
            return lid

    def label(self, lid: int) -> dict | None:
        return self._one("SELECT * FROM labels WHERE id = ?", (lid,))

    def last_label_by(self, user: str) -> dict | None:
        """The user's latest label that is still in force (what "undo" takes back)."""
        return self._one(
            "SELECT l.* FROM labels l JOIN current c ON c.label_id = l.id "
            "WHERE l.user = ? ORDER BY l.id DESC LIMIT 1",
            (user,),
        )

    def undo(self, label: dict, user: str, previous: dict | None, disagrees: str | None) -> int:
        """Log an undo of ``label``; the part's label becomes ``previous`` (or none)."""
        with self.lock:
            self.db.execute("BEGIN")
            uid = self.db.execute(
                "INSERT INTO labels (part, user, t, kind, undoes, station, recording, "
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
            ).lastrowid
            if previous is None:
                self.db.execute("DELETE FROM current WHERE part = ?", (label["part"],))
            else:
                self.db.execute(
                    "UPDATE current SET label_id = ?, label = ?, disagrees = ? WHERE part = ?",
                    (previous["id"], previous["label"], disagrees, label["part"]),
                )
            self.db.execute("COMMIT")
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
            "SELECT date(t, 'unixepoch') AS day, "
            "sum(kind = 'label') AS labels, sum(kind = 'undo') AS undos "
            "FROM labels GROUP BY day ORDER BY day"
        )

    # -- training runs --------------------------------------------------------------------
    def add_run(self, name: str, out: str, user: str, epochs: int) -> int:
        return self._run(
            "INSERT INTO runs (name, out, user, started, epochs, status) "
            "VALUES (?, ?, ?, ?, ?, 'starting')",
            (name, out, user, time.time(), epochs),
        )

    def set_run(self, rid: int, **fields) -> None:
        allowed = {"pid", "status", "ended", "returncode"}
        assert set(fields) <= allowed, fields
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE runs SET {sets} WHERE id = ?", (*fields.values(), rid))

    def run(self, rid: int) -> dict | None:
        return self._one("SELECT * FROM runs WHERE id = ?", (rid,))

    def runs(self, limit: int = 20) -> list[dict]:
        return self._all("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))

    def active_runs(self) -> list[dict]:
        return self._all("SELECT * FROM runs WHERE status IN ('starting', 'running')")

    # -- promotions -----------------------------------------------------------------------
    def add_promotion(self, station, model, folder, previous, user, verify) -> int:
        return self._run(
            "INSERT INTO promotions (station, model, folder, previous, user, t, verify) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (station, model, folder, previous, user, time.time(), verify),
        )

    def promotions(self, limit: int = 20) -> list[dict]:
        return self._all("SELECT * FROM promotions ORDER BY id DESC LIMIT ?", (limit,))
