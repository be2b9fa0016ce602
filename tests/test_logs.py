"""Logging: failures under overload (the first of each kind at once, then one summary), and
URLs named without their passwords."""

from __future__ import annotations

import logging
import time

import pytest

from inspector.logs import Throttled


def test_a_flood_of_failures_becomes_one_line_and_a_summary(caplog):
    log = logging.getLogger("test.throttled")
    t = Throttled(log, period=0.2)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for i in range(1000):
            t.warning("overflow", f"p{i}", "part %r failed safe: overflow", f"p{i}")
        t.warning("timeout", "q1", "part %r failed safe: timeout", "q1")
        t.flush()  # the period is not over: nothing more yet
        assert [r.getMessage() for r in caplog.records] == [
            "part 'p0' failed safe: overflow",
            "part 'q1' failed safe: timeout",
        ]
        time.sleep(0.25)
        t.flush()
        assert caplog.records[-1].getMessage() == (
            "... 999 more parts failed safe with reason overflow in the last 0.2 s (last: 'p999')"
        )
        assert len(caplog.records) == 3  # timeout had nothing suppressed
        t.warning("overflow", "p1000", "part %r failed safe: overflow", "p1000")
        assert caplog.records[-1].getMessage() == "part 'p1000' failed safe: overflow"


@pytest.mark.parametrize("room", ["review.db", "spc"])
def test_a_database_that_cannot_be_reached_is_named_without_its_password(room):
    pytest.importorskip("psycopg", reason="the review and spc extras install it")
    import importlib

    from inspector.errors import InspectorError

    store = importlib.import_module(f"inspector.{room}.store")
    url = "postgresql://inspector:s3cret-pw@127.0.0.1:1/quality"  # port 1: nothing listens
    with pytest.raises(InspectorError) as caught:
        store.Store(url)
    assert "postgresql://inspector:***@127.0.0.1:1/quality" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
