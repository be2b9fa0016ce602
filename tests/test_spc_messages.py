"""What a message may hold before it reaches the SPC store: every hostile shape becomes a dead
letter that says why, and a good verdict becomes its row; the store's schema 3 keeps the dead
letters of a schema-2 database."""

from __future__ import annotations

import json
import sqlite3

import pytest

from inspector.spc.messages import read_message
from inspector.spc.schema import MIGRATIONS
from inspector.spc.store import DeadLetter, Store, VerdictRow

from .spc_helpers import verdict


def with_field(key, value) -> bytes:
    obj = json.loads(verdict(5))
    obj[key] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (with_field("seq", 2**64), "seq: 18446744073709551616 is outside the signed 64-bit range"),
        (with_field("seq", -(2**63) - 1), "outside the signed 64-bit range"),
        (with_field("seq", "12"), "seq: expected int, got '12'"),
        (with_field("seq", True), "seq: expected int, got True"),
        (with_field("seq", 1.5), "seq: expected int, got 1.5"),
        (with_field("t_verdict", float("nan")), "t_verdict: expected number, got nan"),
        (with_field("t_verdict", float("inf")), "t_verdict: expected number, got inf"),
        (with_field("t_trigger", 10**400), "is outside the signed 64-bit range"),
        (b'{"seq": ' + b"1" * 5000 + b"}", "not UTF-8 JSON"),  # more digits than Python reads
        (with_field("part_id", "p\x00"), "part_id: contains a NUL character"),
        (with_field("part_id", "p" * 257), "part_id: 257 characters (at most 256)"),
        (with_field("part_id", ""), "part_id: empty"),
        (with_field("station", {"a": 1}), "station: expected str"),
        (with_field("model_id", ["m"]), "model_id: expected str"),
        (with_field("result", "maybe"), "result: expected pass or fail"),
        (b"[" * 30_000 + b"]" * 30_000, "JSON nested too deep"),
        (b"x" * (1024 * 1024), "payload of 1048576 bytes (more than 65536)"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_a_hostile_verdict_is_a_dead_letter_that_says_why(payload, why):
    row = read_message("verdict", "inspector/st1/verdict", payload, 1.0)
    assert isinstance(row, DeadLetter) and why in row.error, row
    assert row.payload == payload and row.kind == "verdict"


def test_a_good_verdict_and_the_edges_of_the_ranges_are_rows():
    row = read_message("verdict", "t", with_field("seq", 2**63 - 1), 1.0)
    assert isinstance(row, VerdictRow) and row.seq == 2**63 - 1 and row.part_id == "p5"
    assert isinstance(
        read_message("verdict", "t", with_field("part_id", "p" * 256), 1.0), VerdictRow
    )


def test_context_values_are_checked_too():
    assert read_message("context", "lot", b"L1", 1.0, mid=3).value == "L1"
    assert "NUL" in read_message("context", "lot", b"L\x001", 1.0).error
    assert "at most 4096" in read_message("context", "lot", b"x" * 5000, 1.0).error


def test_a_schema_2_database_keeps_its_rejected_messages_as_dead_letters(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE spc_schema (version INTEGER NOT NULL)")
    for version, statements in MIGRATIONS[:2]:
        for st in statements:
            db.execute(st.format(float="REAL", bytes="BLOB"))
        db.execute("INSERT INTO spc_schema VALUES (?)", (version,))
    db.execute("INSERT INTO rejected_messages VALUES ('a/verdict', 5.0, x'ff7b', 'not JSON')")
    db.execute("INSERT INTO context VALUES ('lot', 1.0, 'L1')")
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version() == 4
    assert store.count("dead_letters") == 1 and store.context(0, 2) == [("lot", 1.0, "L1")]
    (row,) = store._db.execute("SELECT topic, kind, error, size, payload FROM dead_letters")
    assert row == ("a/verdict", "unknown", "not JSON", 2, b"\xff{")
