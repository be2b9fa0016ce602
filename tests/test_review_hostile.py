"""The workbench under hostile requests, over real HTTP (uvicorn, one keep-alive connection):
huge, negative and malformed ids, path traversal, links in the recordings and the dataset,
bad and overlong form fields, missing CSRF tokens, wrong methods, large bodies. Then the
login throttle, the security headers in a real page, and ``--add-user``'s password sources.
"""

from __future__ import annotations

import hashlib
import math
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from starlette.testclient import TestClient

from inspector.errors import InspectorError
from inspector.review import users
from inspector.review.db.store import PartFilter, Store

from .review_helpers import PASSWORD, Http, csrf_of, login_http, serve, workbench

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")

SECRET = b"\x89PNG\r\n\x1a\n-the-secret-outside-every-root-"
HUGE = ["99999999999999999999999", "9223372036854775808", "18446744073709551616"]
BAD_IDS = HUGE + [
    "-1",
    "0",
    "NaN",
    "nan",
    "inf",
    "1e5",
    "0x10",
    "%EF%BC%91",
    "%00",
    "1.0",
    "%201",
    "+1",
]


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _plant_links(tmp: Path, app) -> dict:
    """Links planted in the recordings and the dataset, all pointing at files outside."""
    outside = tmp / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(SECRET)
    (outside / "secret.json").write_text(
        '{"part_id": "LINKED-SIDECAR", "result": "fail", "t_verdict": 1796000000, "image": "x.png"}'
    )
    (outside / "crack").mkdir()
    store = app.state.bench.store
    rows = {r["part_id"]: r for r in store.parts(PartFilter(station="line1"), 0, 1000)}
    rec = tmp / "rec1"
    linked = rows["P-0-0004"]  # its image becomes a link to the secret
    image = rec / linked["image"]
    image.unlink()
    image.symlink_to(secret)
    heat = image.with_name(image.stem + ".heat.png")
    heat.symlink_to(secret)
    day = image.parent
    (day / "plain-link.png").symlink_to(secret)
    (day / "linked-sidecar.json").symlink_to(outside / "secret.json")
    (rec / "linked-folder").symlink_to(outside, target_is_directory=True)
    data = tmp / "data"
    (data / "crack").symlink_to(outside / "crack", target_is_directory=True)
    (data / "good" / "link.png").symlink_to(secret)
    return {
        "secret": secret,
        "linked_pid": linked["id"],
        "plain_pid": rows["P-0-0005"]["id"],
        "image_rel": linked["image"],
        "day_rel": str(day.relative_to(rec)),
    }


def _probes(c: Http, token: str, links: dict) -> None:
    """The hostile requests; the caller checks every answer."""
    pid, day = links["linked_pid"], links["day_rel"]
    for route in ("/part/{}", "/thumb/{}", "/input/{}", "/heat/{}", "/train/{}"):
        for bad in BAD_IDS:
            c.send("GET", route.format(bad))
    for bad in BAD_IDS:
        c.form(f"/part/{bad}/label", {"csrf": token, "label": "good"})
        c.form(f"/train/{bad}/cancel", {"csrf": token})
    # path traversal, encoded separators, absolute paths, NUL, links
    for path in (
        "/media/rec/line1/../../etc/passwd",
        "/media/rec/line1/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/media/rec/line1/..%2f..%2f..%2fetc%2fpasswd",
        "/media/rec/line1/%2e%2e%2f%2e%2e%2foutside%2fsecret.png",
        "/media/rec/line1//etc/passwd",
        "/media/rec/line1/%2Fetc%2Fpasswd",
        "/media/rec/line1/..%5c..%5coutside%5csecret.png",
        "/media/rec/line1/%00.png",
        "/media/rec/line1/x%00/../secret.png",
        "/media/rec/line1/./" + quote(links["image_rel"]),
        "/media/rec/line1/" + quote(links["image_rel"]),  # the linked image
        f"/media/rec/line1/{day}/plain-link.png",
        f"/media/rec/line1/{day}/./plain-link.png",
        "/media/rec/line1/linked-folder/secret.png",
        "/media/rec/line2/../rec1/" + quote(links["image_rel"]),
        "/media/rec/%2e%2e/outside/secret.png",
        "/media/rec/nostation/x.png",
        "/media/rec/line1/" + "a/" * 600 + "x.png",
        "/media/dataset/../outside/secret.png",
        "/media/dataset/..%2foutside%2fsecret.png",
        "/media/dataset/good/link.png",
        "/media/dataset/crack/../../outside/secret.png",
        "/media/dataset/%2e%2e/review.yaml",
        "/media/dataset/labels.jsonl",
        "/static/../review.yaml",
        "/static/%2e%2e/%2e%2e/app.py",
        "/static/..%2f..%2fapp.py",
        f"/thumb/{pid}",
        f"/input/{pid}",
        f"/heat/{pid}",
        f"/part/{pid}",
    ):
        c.send("GET", path)
    # labelling a part whose image is a link, and into a class folder that is a link
    c.form(f"/part/{pid}/label", {"csrf": token, "label": "good"})
    c.form(f"/part/{links['plain_pid']}/label", {"csrf": token, "label": "crack"})
    c.form("/label", {"csrf": token, "label": "scratch", "part": [str(pid)]})
    # bad and overlong form fields
    long = "x" * 100_000
    for fields in (
        {"label": "good", "part": HUGE},
        {"label": "good", "part": ["-1"]},
        {"label": "good", "part": ["NaN"]},
        {"label": "good", "part": [""]},
        {"label": "good", "part": ["1" * 5000]},
        {"label": "good", "part": [str(i) for i in range(1, 700)]},
        {"label": long, "part": ["1"]},
        {"label": "../../outside", "part": ["1"]},
        {"label": "good", "part": ["1"], "next": "//evil.example/"},
        {"label": "good", "part": ["1"], "next": long},
    ):
        c.form("/label", {"csrf": token, **fields})
    for lid in HUGE + ["-1", "NaN", "1e3", long, "0"]:
        c.form("/undo", {"csrf": token, "label_id": lid})
    for fields in (
        {"name": "r", "epochs": "NaN"},
        {"name": "r", "epochs": "1e9"},
        {"name": "r", "epochs": HUGE[0]},
        {"name": "r", "epochs": "-1"},
        {"name": "r", "epochs": "1" * 5000},
        {"name": long, "epochs": "1"},
        {"name": "../../outside", "epochs": "1"},
        {"name": "", "epochs": ""},
    ):
        c.form("/train", {"csrf": token, **fields})
    for fields in (
        {"station": "line1", "model": "../../outside"},
        {"station": long, "model": long},
        {"station": "", "model": ""},
        {"station": "nope"},
    ):
        c.form("/models/promote", {"csrf": token, **fields})
        c.form("/models/rollback", {"csrf": token, **fields})
    c.send("GET", "/models/promote/" + HUGE[0])
    # inbox and compare with hostile queries
    for query in (
        {"page": HUGE[0]},
        {"page": "-1"},
        {"page": "NaN"},
        {"page": "1" * 5000},
        {"score_min": "nan", "score_max": "inf"},
        {"score_min": "1e400"},
        {"since": "9999-99-99", "until": "0000-00-00"},
        {"since": "2026-11-30T25:61"},
        {"sort": "id; DROP TABLE parts"},
        {"station": "' OR 1=1 --"},
        {"station": long[:20000]},
        {"reviewed": "maybe", "model": "\x00"},
    ):
        c.send("GET", "/?" + urlencode(query))
    c.send("GET", f"/part/{pid}?" + urlencode({"sort": "score", "score_min": "nan"}))
    c.send("GET", "/compare?" + urlencode({"a": "../../outside", "b": "x"}))
    c.send("GET", "/compare?" + urlencode({"a": long[:10000], "b": long[:10000]}))
    c.send("GET", "/login?" + urlencode({"next": "javascript:alert(1)"}))
    # every form without its token, and with a wrong one
    for path in ("/part/1/label", "/label", "/undo", "/train", "/train/1/cancel", "/rescan"):
        c.form(path, {"label": "good"})
        c.form(path, {"label": "good", "csrf": token + "x"})
    c.form("/models/promote", {"station": "line1", "model": "x"})
    c.form("/logout", {})
    # wrong methods
    for method, path in (
        ("PUT", "/part/1/label"),
        ("DELETE", "/part/1"),
        ("PATCH", "/label"),
        ("GET", "/label"),
        ("GET", "/undo"),
        ("GET", "/rescan"),
        ("GET", "/models/promote"),
        ("GET", "/logout"),
        ("POST", "/"),
        ("POST", "/part/1"),
        ("DELETE", "/train/1"),
        ("OPTIONS", "/"),
        ("TRACE", "/"),
    ):
        c.send(method, path, b"" if method in ("POST", "PUT", "PATCH") else None)
    # bodies: too large, malformed multipart, JSON, a wrong length
    c.send("POST", "/label", b"csrf=" + token.encode() + b"&label=" + b"g" * (2 << 20))
    c.send(
        "POST",
        "/label",
        b"--x\r\nContent-Disposition: form-data; name=csrf\r\n\r\n" + token.encode() + b"\r\n",
        {"Content-Type": "multipart/form-data; boundary=x"},
    )
    c.send(
        "POST",
        "/label",
        b'{"csrf": "' + token.encode() + b'"}',
        {"Content-Type": "application/json"},
    )
    c.send(
        "POST",
        "/label",
        b'--y\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n'
        + token.encode()
        + b'\r\n--y\r\nContent-Disposition: form-data; name="label"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + SECRET + b"\r\n--y--\r\n",
        {"Content-Type": "multipart/form-data; boundary=y"},
    )
    # the login form, with hostile fields
    for fields in (
        {"name": "admin", "password": "x"},  # no csrf
        {"name": long, "password": long, "csrf": "x"},
    ):
        c.form("/login", fields)


def test_hostile_requests_get_no_500_and_reach_nothing_outside_the_roots(tmp_path):
    cfg, app = workbench(tmp_path)
    links = _plant_links(tmp_path, app)
    app.state.bench.rescan()  # the linked sidecar is skipped, never read
    outside_before = _snapshot(tmp_path / "outside")
    writable = ("db/", "cache/", "data/", "runs/")  # the workbench's own folders
    rest_before = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith(writable)}
    with serve(app) as (host, port):
        c = Http(host, port)
        token = login_http(c)
        _probes(c, token, links)
        statuses = [s for _m, _p, s, _b, _h in c.log]
        n = len(c.log)
        errors = [(m, p, s) for m, p, s, _b, _h in c.log if s >= 500 or s == 0]
        leaked = [(m, p) for m, p, _s, body, _h in c.log if SECRET in body]
        unguarded = [
            (m, p)
            for m, p, s, _b, h in c.log
            if s
            and not (
                "content-security-policy" in h
                and h.get("x-content-type-options") == "nosniff"
                and "referrer-policy" in h
            )
        ]
        # the workbench still works on the same connection
        status, body, _ = c.send("GET", "/")
        assert status == 200 and b"part(s)" in body
    print(f"hostile requests: {n}; status counts: {dict(sorted(_count(statuses).items()))}")
    print("answered 2xx/3xx:", [(m, p[:60], s) for m, p, s, _b, _h in c.log if 0 < s < 400])
    assert n >= 200
    assert not errors, f"{len(errors)} answers with 5xx or a dropped connection: {errors[:10]}"
    assert c.resets == 0
    assert not leaked, f"the secret was served: {leaked}"
    assert not unguarded, f"answers without the security headers: {unguarded[:5]}"
    # nothing was copied out of, or written into, a place outside the roots
    assert _snapshot(tmp_path / "outside") == outside_before
    rest = {k: v for k, v in _snapshot(tmp_path).items() if not k.startswith(writable)}
    assert rest == rest_before, "a file outside the workbench's folders was added or changed"
    for f in (tmp_path / "data").rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert SECRET not in f.read_bytes(), f
    store = app.state.bench.store
    assert store.part(links["linked_pid"])["label"] is None, "a linked image is never labelled"
    assert store.part(links["plain_pid"])["label"] is None, "nothing written into a linked folder"
    assert "LINKED-SIDECAR" not in {r["part_id"] for r in store.parts(PartFilter(), 0, 1000)}
    # the clear answers, by kind
    by_path = {(m, p): s for m, p, s, _b, _h in c.log}
    assert by_path[("GET", f"/part/{HUGE[0]}")] == 404
    assert by_path[("GET", f"/thumb/{HUGE[0]}")] == 404
    assert by_path[("POST", f"/part/{HUGE[0]}/label")] == 404
    assert by_path[("GET", f"/thumb/{links['linked_pid']}")] == 404
    assert by_path[("POST", "/label")] in (400, 403, 413)


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def test_labelling_refuses_links_and_keeps_the_dataset_as_it_was(tmp_path):
    cfg, app = workbench(tmp_path)
    links = _plant_links(tmp_path, app)
    before = _snapshot(tmp_path / "data")
    c = TestClient(app)
    token = csrf_of(c.get("/login").text)
    c.post("/login", data={"name": "reviewer", "password": PASSWORD, "csrf": token})
    token = csrf_of(c.get("/").text)
    r = c.post(f"/part/{links['linked_pid']}/label", data={"csrf": token, "label": "good"})
    assert r.status_code == 400 and "link" in r.text and "nothing labelled" in r.text
    r = c.post(f"/part/{links['plain_pid']}/label", data={"csrf": token, "label": "scratch"})
    assert r.status_code == 400 and "is a link" in r.text  # data/crack links out
    assert _snapshot(tmp_path / "data") == before
    assert not (tmp_path / "data" / "labels.jsonl").exists()
    assert app.state.bench.store.label_counts() == {}
    assert not list((tmp_path / "outside" / "crack").iterdir())
    (tmp_path / "data" / "crack").unlink()  # the operator removes the link: labelling works
    r = c.post(f"/part/{links['plain_pid']}/label", data={"csrf": token, "label": "crack"})
    assert r.status_code == 200
    (copied,) = (tmp_path / "data" / "crack").glob("*.png")
    assert not copied.is_symlink()


def test_failed_logins_are_slowed_per_user_and_per_address_and_audited(tmp_path, caplog):
    cfg, app = workbench(tmp_path)
    store = app.state.bench.store

    def attempt(c, name, password):
        token = csrf_of(c.get("/login").text)
        return c.post(
            "/login",
            data={"name": name, "password": password, "csrf": token},
            follow_redirects=False,
        )

    c = TestClient(app, client=("10.0.0.1", 4000))
    t0 = time.monotonic()
    answers = [attempt(c, "admin", f"guess-{i}").status_code for i in range(30)]
    took = time.monotonic() - t0
    assert answers[:3] == [401, 401, 401], answers
    # after 3 free failures each checked one needs twice the wait of the one before (1, 2,
    # 4 ... s), so in `took` seconds at most 3 + log2(took + 1) + 1 passwords were looked at
    checked = answers.count(401)
    assert checked <= 3 + math.log2(took + 1) + 1, f"{answers} in {took:.1f} s"
    assert answers.count(429) == 30 - checked >= 20, answers
    refused = attempt(c, "admin", PASSWORD)
    assert refused.status_code == 429, "the right password waits too while throttled"
    assert "try again in" in refused.text and int(refused.headers["retry-after"]) >= 1
    failures = [a for a in store.login_attempts(100) if not a["ok"]]
    assert len(failures) == sum(1 for a in answers if a == 401), "each checked failure audited"
    assert all(a["address"] == "10.0.0.1" and a["name"] == "admin" for a in failures)
    assert "login failed for 'admin' from 10.0.0.1" in caplog.text
    # per user: another address is refused for admin as well
    other = TestClient(app, client=("10.0.0.2", 4000))
    assert attempt(other, "admin", PASSWORD).status_code == 429
    # per address: 10.0.0.1 guessing other names is refused too, another user elsewhere is not
    assert attempt(c, "viewer", PASSWORD).status_code == 429
    assert attempt(other, "viewer", PASSWORD).status_code == 303
    # the wait doubles: after it has passed, the right password gets in
    n, last = store.login_failures("name", "admin", time.time() - 900)
    wait = last + min(300, 2 ** (n - 3)) - time.time()
    time.sleep(max(0.0, wait) + 0.2)
    assert attempt(c, "admin", PASSWORD).status_code == 303
    assert store.login_failures("name", "admin", time.time() - 900)[0] == 0, "a success resets"


def test_every_answer_carries_the_security_headers_and_pages_keep_working(tmp_path):
    cfg, app = workbench(tmp_path)
    c = TestClient(app)
    for path in ("/login", "/", "/static/review.js", "/nope", "/part/1"):
        r = c.get(path, follow_redirects=False)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "same-origin", path
    page = c.get("/login").text
    assert "<script>" not in page and " style=" not in page and " on" + "click=" not in page


def test_add_user_reads_the_password_from_a_file_stdin_or_a_terminal_twice(tmp_path):
    from inspector.review import auth

    db = str(tmp_path / "r.sqlite")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert "saved" in users.add_user_command(db, "ann", "admin", pw, env={})
    assert auth.login(Store(db), "ann", PASSWORD, 1.0)[1].role == "admin"
    with pytest.raises(InspectorError, match="at least 8"):
        pw.write_text("short\n")
        users.add_user_command(db, "bob", "viewer", pw, env={})
    with pytest.raises(InspectorError, match="cannot read"):
        users.add_user_command(db, "bob", "viewer", tmp_path / "missing", env={})
    asked = iter(["first password", "second password"])
    with pytest.raises(InspectorError, match="differ"):
        users.read_password("bob", stdin=_Tty(), env={}, prompt=lambda _p: next(asked))

    config = tmp_path / "review.yaml"
    config.write_text(f"database: {db}\ndataset:\n  path: d\n")
    cli = [sys.executable, "-m", "inspector.cli", "review", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != users.PASSWORD_ENV}
    # no terminal: standard input's first line, no prompt, no traceback
    r = subprocess.run(
        [*cli, "--add-user", "cy", "--role", "viewer"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert auth.login(Store(db), "cy", PASSWORD, 1.0) is not None
    r = subprocess.run(
        [*cli, "--add-user", "dee"], input="", capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "EOFError" not in r.stderr
    assert "standard input: empty" in r.stdout + r.stderr
    # at a terminal: asked twice; different answers save nothing, equal ones save the user
    assert _at_terminal(cli + ["--add-user", "eve"], ["one password", "another one"], env) != 0
    assert Store(db).user("eve") is None
    assert _at_terminal(cli + ["--add-user", "eve"], [PASSWORD, PASSWORD], env) == 0
    assert auth.login(Store(db), "eve", PASSWORD, 1.0) is not None


class _Tty:
    closed = False

    def isatty(self) -> bool:
        return True


def _at_terminal(cmd: list[str], answers: list[str], env: dict) -> int:
    """Run ``cmd`` with a pseudo-terminal as its controlling terminal; answer each prompt."""
    import fcntl
    import termios

    master, slave = pty.openpty()

    def controlling() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=controlling
    )
    os.close(slave)
    seen = b""
    pending = list(answers)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if pending and seen.count(b"password for") > len(answers) - len(pending):
                os.write(master, pending.pop(0).encode() + b"\n")
        return proc.wait(30)
    finally:
        os.close(master)


STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a process that takes its time to stop
out = sys.argv[sys.argv.index("--out") + 1]
open(out + "/history.csv", "w").write("epoch,loss\\n")
time.sleep(120)
"""


def test_a_slow_cancel_and_thumbnails_leave_the_other_pages_answering(tmp_path):
    """Cancelling a run that ignores SIGTERM waits 10 s before SIGKILL, and a first thumbnail
    decodes a large frame: both in worker threads, so the inbox answers meanwhile."""
    import threading

    import cv2
    import numpy as np

    cfg, app = workbench(tmp_path)
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    jobs = app.state.bench.jobs
    real = jobs.command
    jobs.command = lambda out, epochs: [sys.executable, str(script), *real(out, epochs)[3:]]
    store = app.state.bench.store
    big = store.parts(PartFilter(station="line1"), 0, 1)[0]
    frame = np.random.default_rng(0).integers(0, 255, (6000, 6000), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "rec1" / big["image"]), frame)
    with serve(app) as (host, port):
        c = Http(host, port)
        token = login_http(c, "reviewer")
        status, _, _ = c.form("/train", {"csrf": token, "name": "slow", "epochs": "1"})
        assert status == 303
        time.sleep(1.0)  # the process has set its SIGTERM handler
        slow = Http(host, port)
        slow.cookies = dict(c.cookies)
        answers: dict[str, tuple] = {}

        def call(name, method, path, fields=None):
            t = time.monotonic()
            if fields is None:
                s, _, _ = slow_clients[name].send(method, path)
            else:
                s, _, _ = slow_clients[name].form(path, fields)
            answers[name] = (s, time.monotonic() - t)

        thumb = Http(host, port)
        thumb.cookies = dict(c.cookies)
        slow_clients = {"cancel": slow, "thumb": thumb}
        workers = [
            threading.Thread(
                target=call, args=("cancel", "POST", "/train/1/cancel", {"csrf": token})
            ),
            threading.Thread(target=call, args=("thumb", "GET", f"/thumb/{big['id']}")),
        ]
        for w in workers:
            w.start()
        times = []
        while any(w.is_alive() for w in workers):
            t = time.monotonic()
            status, body, _ = c.send("GET", "/")
            times.append(time.monotonic() - t)
            assert status == 200 and b"part(s)" in body
            time.sleep(0.1)
        for w in workers:
            w.join()
    assert answers["cancel"][0] == 303 and answers["cancel"][1] >= 9, answers
    assert answers["thumb"][0] == 200, answers
    # a wait on the event loop holds one inbox call for the whole 10 s (and blocks the rest)
    assert len(times) >= 5 and max(times) < 5.0, (len(times), max(times))
    assert store.run(1)["status"] == "cancelled"
