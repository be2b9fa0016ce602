"""The review workbench as a whole: login and the CSRF token on every form, the indexer,
the config, the CLI's --add-user, the page bench. Each page's own tests are in
test_review_<page>.py (inbox, part, labels, train, compare, ...); the key journey in a
real headless Chromium in test_review_browser.py."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from inspector.cli import main
from inspector.errors import ConfigError
from inspector.review.config import load_review_config
from inspector.review.db import index
from inspector.review.db.schema import MIGRATIONS
from inspector.review.db.store import Store

from .review_helpers import PASSWORD, client_as, csrf_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


def test_login_is_required_and_checked(bench):
    _, _, app = bench
    c = TestClient(app)
    r = c.get("/part/1?sort=score", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/part/1%3Fsort%3Dscore"
    token = csrf_of(c.get("/login").text)
    bad = c.post("/login", data={"name": "admin", "password": "wrong-password", "csrf": token})
    assert bad.status_code == 401 and "Wrong name or password" in bad.text
    token = csrf_of(bad.text)
    assert (
        c.post("/login", data={"name": "nobody", "password": PASSWORD, "csrf": token}).status_code
        == 401
    )
    r = c.post("/login", data={"name": "viewer", "password": PASSWORD, "csrf": "forged"})
    assert r.status_code == 403, "a login without the form's token is refused"
    token = csrf_of(c.get("/login").text)
    r = c.post(
        "/login",
        data={"name": "viewer", "password": PASSWORD, "csrf": token, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/", "no redirect off the site"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "review_session=" in cookie
    inbox = c.get("/")
    assert inbox.status_code == 200 and "viewer (viewer)" in inbox.text
    c.post("/logout", data={"csrf": csrf_of(inbox.text)})
    assert c.get("/", follow_redirects=False).status_code == 303


FORMS = [
    "/part/2/label",
    "/label",
    "/undo",
    "/train",
    "/train/1/cancel",
    "/rescan",
    "/models/promote",
    "/models/rollback",
    "/logout",
]


def test_every_form_needs_its_csrf_token(bench):
    _, _, app = bench
    c, token = client_as(app, "admin")
    for path in FORMS:
        _refused_without_token(c, token, path)


def _refused_without_token(c, token, path):
    assert c.post(path, data={"label": "good"}).status_code == 403
    assert c.post(path, data={"label": "good", "csrf": token + "x"}).status_code == 403
    assert c.post(path, data={"csrf": "x"}, headers={"X-CSRF-Token": "y"}).status_code == 403


def test_index_reads_only_new_sidecars_and_skips_bad_ones(tmp_path):
    from .review_helpers import make_recordings

    make_recordings(tmp_path / "rec", 6)
    store = Store(":memory:")
    assert index.scan(store, "s", tmp_path / "rec").added == 6
    assert index.scan(store, "s", tmp_path / "rec").added == 0
    day = next((tmp_path / "rec").iterdir()) / "fail"
    (day / "broken.json").write_text("{not json")
    (day / "other.json").write_text('{"hello": 1}')
    (day / "escape.json").write_text(
        '{"part_id": "x", "result": "fail", "t_verdict": 1, "image": "../../../etc/passwd"}'
    )
    r = index.scan(store, "s", tmp_path / "rec")
    assert r.added == 0 and len(r.skipped) == 3
    assert store.version() == len(MIGRATIONS)


def test_config_is_validated_with_key_and_line(tmp_path):
    bad = tmp_path / "review.yaml"
    bad.write_text("dataset:\n  path: d\n  defects: []\nbogus: 1\n")
    with pytest.raises(ConfigError) as e:
        load_review_config(bad)
    text = "\n".join(e.value.problems)
    assert "bogus" in text and "defects" in text and ":4" in text


def test_cli_adds_a_user(tmp_path, monkeypatch, capsys):
    from inspector.review import auth

    cfg = tmp_path / "review.yaml"
    cfg.write_text("database: r.sqlite\ndataset:\n  path: d\n")
    monkeypatch.setenv("INSPECTOR_REVIEW_PASSWORD", PASSWORD)
    assert main(["review", "--config", str(cfg), "--add-user", "ann", "--role", "admin"]) == 0
    store = Store(tmp_path / "r.sqlite")
    assert auth.login(store, "ann", PASSWORD, 1.0)[1].role == "admin"
    assert auth.login(store, "ann", "wrong password", 1.0) is None
    assert store.user("ann")["hash"].startswith("$argon2id$")
    monkeypatch.setenv("INSPECTOR_REVIEW_PASSWORD", "short")
    assert main(["review", "--config", str(cfg), "--add-user", "bob"]) == 1


def test_bench_measures_pages(tmp_path):
    from inspector.review.bench import run

    result = run(3000, repeats=1, work=tmp_path)
    pages = result["pages"]
    assert set(pages) >= {
        "first page, newest",
        "time range + class",
        "part page (with previous/next)",
    }
    # every filter row timed a page that found parts: the time range lies inside the data
    assert all(p["parts_matched"] > 0 for k, p in pages.items() if k.startswith(("first", "time")))
    assert (
        0
        < pages["time range + class"]["parts_matched"]
        < pages["first page, newest"]["parts_matched"]
    )
    assert pages["part page (with previous/next)"]["status"] == 200
    assert result["worst_ms"] < 2000


def test_bench_stops_on_a_filter_that_matches_nothing(tmp_path, monkeypatch):
    from inspector.review import bench

    real = bench.queries
    monkeypatch.setattr(
        bench, "queries", lambda n: {**real(n), "before the data": "until=2020-01-01"}
    )
    with pytest.raises(bench.BenchError, match="no parts matched"):
        bench.run(500, repeats=1, work=tmp_path)
