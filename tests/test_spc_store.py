"""The SPC store on SQLite and a real PostgreSQL (dedup, migration, retention), backfill from
the recorder's sidecars, and the config's errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inspector.errors import ConfigError
from inspector.spc.config import load_spc_config
from inspector.spc.ingest import backfill
from inspector.spc.store import DeadLetter, Store, VerdictRow

from .pg import postgres_url  # noqa: F401 (fixture)
from .spc_helpers import rows


# -- the store ---------------------------------------------------------------------------------
def check_store(store: Store):
    assert store.schema_version() == 4
    batch = rows("a", [0.05] * 2, n=50)
    assert len(store.add_verdicts(batch)) == 100
    assert store.add_verdicts(batch[:10] + batch[-5:]) == [], "a redelivery counts once"
    again = VerdictRow("a", 0, "p0", 5000.0, 5000.0, "pass", "ok", None, 0, "m")
    assert len(store.add_verdicts([again])) == 1, "same seq and id, new trigger time: a new part"
    cols = store.verdicts("a")
    assert len(cols["seq"]) == 101 and np.all(np.diff(cols["t_verdict"]) >= 0)
    assert store.stations() == ["a"]
    store.add_context([("lot", 1.0, "x"), ("lot", 2.0, "y")])
    assert store.context(1.5, 3.0) == [("lot", 1.0, "x"), ("lot", 2.0, "y")]
    assert store.add_dead_letters([DeadLetter("a/verdict", 1.0, "verdict", "bad", b"\xff{")]) == 1
    assert store.prune(older_than_s=10, now=1100.0) == 103  # all but the 5000 s part
    assert store.count() == 1 and store.count("context") == 0


def test_sqlite_store_dedups_migrates_and_keeps_retention(tmp_path):
    store = Store(tmp_path / "x" / "spc.sqlite")
    check_store(store)
    store.close()
    assert Store(tmp_path / "x" / "spc.sqlite").migrate() == 4, "reopening migrates nothing"


def test_postgresql_store_same_schema(postgres_url):  # noqa: F811
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    store = Store(postgres_url)
    check_store(store)
    store.close()


# -- backfill ----------------------------------------------------------------------------------
def sidecar(seq, fail=False):
    return {
        "part_id": f"p{seq}",
        "seq": seq,
        "result": "fail" if fail else "pass",
        "reason": "defect" if fail else "ok",
        "class": "crack" if fail else "good",
        "scores": {"crack": 0.9 if fail else 0.1, "good": 0.1},
        "threshold": {"crack": 0.5},
        "model_id": "m@1",
        "t_trigger": 100.0 + seq,
        "t_capture": 100.0 + seq,
        "t_verdict": 100.1 + seq,
        "deadline": 101.0 + seq,
        "detail": "",
        "image": f"{seq}.png",
    }


def test_backfill_from_sidecars_counts_each_part_once(tmp_path):
    rec = tmp_path / "rec" / "2024-05-01"
    for seq in range(30):
        folder = rec / ("fail" if seq % 3 == 0 else "pass")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{seq}.json").write_text(json.dumps(sidecar(seq, seq % 3 == 0)))
    (rec / "fail" / "broken.json").write_text("{not json")
    store = Store(tmp_path / "spc.sqlite")
    new, bad = backfill(store, "st1", tmp_path / "rec")
    assert len(new) == 30 and bad == 1
    assert new[0].origin == "sidecar" and sum(r.defects for r in new) == 10
    assert backfill(store, "st1", tmp_path / "rec")[0] == [], "read twice, stored once"
    assert store.count() == 30


# -- config ------------------------------------------------------------------------------------
def test_bad_config_names_the_key_and_line(tmp_path):
    path = tmp_path / "spc.yaml"
    path.write_text(
        "charts:\n  rules: [we1_beyond_3s, sometimes]\n  subgroup_parts: 3\nstore:\n  nope: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_spc_config(path)
    text = "\n".join(err.value.problems)
    assert "charts.rules: unknown rule 'sometimes'" in text
    assert "charts.subgroup_parts: must be at least 10" in text
    assert ":5: store.nope: unknown key" in text
    path.write_text("store: {url: data/spc.sqlite}\n")
    assert load_spc_config(path).store.url == str(tmp_path / "data" / "spc.sqlite")
