"""The review app on PostgreSQL: the store's operations give what they give on SQLite, and the
key routes (login, inbox filters and paging, relabel and undo, dataset counts) work, against a
real PostgreSQL started by tests/pg.py (skipped, with the reason, only without its binaries)."""

from __future__ import annotations

import dataclasses
import types
import uuid

import pytest

from inspector.review import auth
from inspector.review.app import create_app
from inspector.review.config import load_review_config
from inspector.review.db.schema import MIGRATIONS
from inspector.review.db.store import PartFilter, Store

from . import test_review, test_review_inbox, test_review_labels
from .pg import postgres_url  # noqa: F401 (fixture)
from .review_helpers import (
    PASSWORD,
    T0,
    make_recordings,
    make_reports,
    seed_dataset,
    write_config,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


@pytest.fixture
def review_url(postgres_url):  # noqa: F811
    """A fresh, empty database on the session's server, dropped afterwards."""
    import psycopg

    name = f"review_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP DATABASE {name} WITH (FORCE)")


def part_rows(n: int, station: str = "s1") -> list[dict]:
    return [
        {
            "station": station,
            "sidecar": f"2026-11-29/fail/{i:04d}.json",
            "image": f"2026-11-29/fail/{i:04d}.png",
            "part_id": f"P{i}",
            "seq": i,
            "t": T0 + 3600.0 * i + 0.123456,  # a Unix time keeps its sub-second digits
            "result": "pass" if i % 3 == 0 else "fail",
            "reason": "ok" if i % 3 == 0 else "defect",
            "class": "good" if i % 3 == 0 else "crack",
            "score": None if i == 5 else round(0.05 * i, 2),
            "model_id": f"m@{i % 2}",
        }
        for i in range(n)
    ]


def exercise(store: Store) -> dict:
    """The store's key operations; what they return, to compare between the dialects."""
    out: dict = {"version": store.version()}

    def key(pid: int | None) -> tuple | None:  # PostgreSQL's ids may skip (ON CONFLICT)
        return None if pid is None else (store.part(pid)["station"], store.part(pid)["part_id"])

    store.put_user("ann", "h1", "viewer")
    store.put_user("ann", "h2", "admin")  # upsert
    out["user"] = store.user("ann")
    store.add_session("tok", "ann", "csrf", T0 * 2)
    out["session"] = store.session("tok")
    store.drop_session("tok")
    out["dropped"] = store.session("tok")
    out["added"] = store.add_parts(part_rows(12))
    out["again"] = store.add_parts(part_rows(12)[:4] + part_rows(1, "s2"))  # one new
    out["sidecars"] = sorted(store.known_sidecars("s2"))
    out["t"] = store.part(1)["t"]
    for f in (
        PartFilter(),
        PartFilter(station="s1", reason="defect", sort="score"),
        PartFilter(score_min=0.2, score_max=0.4, sort="score_asc"),
        PartFilter(since=T0 + 3600 * 3, until=T0 + 3600 * 8, sort="time_asc"),
        PartFilter(model="m@1", cls="crack"),
    ):
        out[f"count {f}"] = store.count(f)
        out[f"page {f}"] = [key(r["id"]) for r in store.parts(f, 2, 3)]
        out[f"around {f}"] = tuple(map(key, store.neighbours(f, 4)))
    out["choices"] = store.choices()
    # the dashboard's and the slider's queries
    out["stations"] = store.station_names()
    out["newest"] = store.newest_t("s1")
    out["seq"] = [(r["seq"], r["result"]) for r in store.seq_results("s1", T0 + 3600 * 2)]
    out["reasons"] = store.reject_reasons("s1", T0)
    out["latest"] = [(r["part_id"], r["result"]) for r in store.latest_parts("s1", 3)]
    out["scored"] = sorted((r["score"] or -1, r["result"]) for r in store.scored_parts("s1"))
    p2, p3 = store.part(2), store.part(3)
    first = store.add_label(p2, "ann", "good", "false_reject")
    second = store.add_label(p2, "ann", "crack", None)
    store.add_label(p3, "bob", "scratch", "escape")
    out["reviewed"] = (
        store.count(PartFilter(reviewed="yes")),
        store.count(PartFilter(reviewed="no")),
    )
    last = store.last_label_by("ann")
    out["last"] = last["id"] == second and last["label"] == "crack"
    previous = store.label_in_force_before(last)
    out["previous"] = previous["id"] == first
    store.undo(last, "ann", previous, "false_reject")
    out["after undo"] = store.part(2)["label"], store.part(2)["label_id"] == first
    out["bob undoes"] = store.undo(store.last_label_by("bob"), "bob", None, None) > second
    out["counts"] = store.label_counts(), store.disagreements()
    out["per day"] = store.labels_per_day()
    out["log"] = [(r["kind"], r["label"], r["user"]) for r in store.label_log()]
    rid = store.add_run("r1", "/runs/r1", "ann", 3)
    store.set_run(rid, pid=4242, status="running")
    out["active"] = [(r["name"], r["status"], r["pid"]) for r in store.active_runs()]
    store.set_run(rid, status="done", ended=T0, returncode=0)
    out["run"] = {k: store.run(rid)[k] for k in ("status", "returncode", "epochs", "user")}
    pid = store.add_promotion("s1", "m@2", "/models/m2", "m@1", "ann", "pass")
    out["promotions"] = [(r["id"] == pid, r["model"], r["user"]) for r in store.promotions()]
    return out


def test_postgresql_store_gives_what_sqlite_gives(review_url, tmp_path, monkeypatch):
    clock = types.SimpleNamespace(time=lambda: T0 + 0.5)  # labels of one (UTC) day
    monkeypatch.setattr("inspector.review.db.store.time", clock)
    pg = Store(review_url)
    assert pg.dialect == "postgresql" and pg.version() == len(MIGRATIONS)
    got = exercise(pg)
    pg.close()
    expected = exercise(Store(tmp_path / "r.sqlite"))
    assert got == expected
    assert got["added"] == 12 and got["again"] == 1 and got["t"] == T0 + 0.123456
    assert got["per day"] == [{"day": "2026-11-30", "labels": 3, "undos": 2}]
    reopened = Store(review_url)  # migrations are not applied twice
    assert reopened.migrate() == len(MIGRATIONS) and reopened.version() == len(MIGRATIONS)
    assert reopened.count(PartFilter()) == 13
    reopened.close()


def test_a_wrong_url_is_one_clear_error(postgres_url):  # noqa: F811
    from inspector.errors import InspectorError

    bad = postgres_url.replace("postgres@", "nobody:secret@").rsplit("/", 1)[0] + "/nope"
    with pytest.raises(InspectorError) as e:
        Store(bad)
    assert "cannot connect to" in str(e.value) and "secret" not in str(e.value)


def test_config_takes_a_url_and_keeps_sqlite_paths_relative(tmp_path):
    path = tmp_path / "review.yaml"
    path.write_text("database: postgresql://review@db.plant/review\ndataset:\n  path: d\n")
    assert load_review_config(path).database == "postgresql://review@db.plant/review"
    path.write_text("database: db/r.sqlite\ndataset:\n  path: d\n")
    assert load_review_config(path).database == str(tmp_path / "db" / "r.sqlite")


@pytest.fixture
def pg_bench(tmp_path, review_url):
    """tests/review_helpers.workbench with its database on PostgreSQL."""
    make_recordings(tmp_path / "rec1", 30)
    make_recordings(tmp_path / "rec2", 10, station_seed=1)
    seed_dataset(tmp_path / "data")
    make_reports(tmp_path / "reports", [str(p) for p in sorted((tmp_path / "data").rglob("*.png"))])
    cfg = dataclasses.replace(load_review_config(write_config(tmp_path)), database=review_url)
    app = create_app(cfg)
    store = app.state.bench.store
    assert store.dialect == "postgresql"
    for role in auth.ROLES:
        auth.add_user(store, role, PASSWORD, role)
    yield tmp_path, cfg, app
    store.close()


@pytest.mark.parametrize(
    "journey",
    [
        test_review.test_login_is_required_and_checked,
        test_review_inbox.test_inbox_filters_sorts_and_pages,
        test_review_labels.test_relabel_writes_the_dataset_the_log_and_undo_takes_it_back,
        test_review_labels.test_bulk_labels_and_roles,
        test_review_labels.test_dataset_page_counts,
    ],
    ids=lambda journey: journey.__name__,
)
def test_routes_on_postgresql(pg_bench, journey):
    """The same journeys, the same assertions as on SQLite (test_review.py, test_review_inbox.py,
    test_review_labels.py)."""
    journey(pg_bench)
