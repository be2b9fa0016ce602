"""The OPC UA view's state machine and users file, without a server."""

from __future__ import annotations

import stat

import pytest

from inspector.errors import ConfigError
from inspector.plant.opcua.states import Refused, VisionStates
from inspector.plant.opcua.users import add_user, hash_password, load_users, verify_password


def test_the_station_state_decides_first():
    vs = VisionStates()
    assert (vs.top, vs.reporting()) == ("Preoperational", None)  # starting: no results yet
    vs.set_station("online")
    assert (vs.top, vs.automatic) == ("Operational", "ContinuousExecution")
    assert vs.reporting() is not None
    vs.set_station("degraded")  # camera lost: fail-safe rejects are still results
    assert (vs.top, vs.system_state()) == ("Error", 5)
    assert vs.reporting() is not None
    vs.set_station("online")  # ErrorToOperationalAuto
    assert (vs.top, vs.system_state()) == ("Operational", 1)
    vs.set_station("offline")
    assert vs.top == "Halted"
    with pytest.raises(Refused, match="offline"):
        vs.reset()


def test_halt_holds_until_reset_and_automatic_mode():
    vs = VisionStates()
    vs.set_station("online")
    vs.halt()
    vs.set_station("degraded")
    vs.set_station("online")
    assert (vs.top, vs.reporting(), vs.system_state()) == ("Halted", None, 4)
    with pytest.raises(Refused):
        vs.halt()
    with pytest.raises(Refused):
        vs.start(single=False)
    vs.reset()
    assert vs.top == "Preoperational"
    vs.select_mode_automatic()
    assert (vs.top, vs.automatic, vs.reporting()) == ("Operational", "Ready", None)
    job = vs.start(single=True, meas_id="m", part_id="p")
    assert (vs.automatic, vs.reporting()) == ("SingleExecution", job)
    vs.single_done()
    assert vs.automatic == "Ready"


def test_select_mode_automatic_waits_for_a_started_station():
    vs = VisionStates(auto_start=False)
    assert vs.top == "Preoperational"
    with pytest.raises(Refused, match="starting"):
        vs.select_mode_automatic()
    vs.set_station("online")
    assert vs.top == "Preoperational"  # without auto_start the MES selects the mode
    vs.select_mode_automatic()
    assert vs.top == "Operational"


def test_passwords_are_kept_as_scrypt_hashes(tmp_path):
    h = hash_password("s3cret")
    assert h.startswith("scrypt$") and "s3cret" not in h
    assert verify_password("s3cret", h) and not verify_password("s3cret ", h)
    assert not verify_password("s3cret", "plain")
    path = tmp_path / "users.yaml"
    add_user(path, "mes", "operator", "s3cret")
    add_user(path, "mes", "engineer", "other")  # replaces the entry
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = load_users(path)
    assert (users["mes"].role, len(users)) == ("engineer", 1)
    assert verify_password("other", users["mes"].password_hash)


@pytest.mark.parametrize(
    "entry, words",
    [
        ("{name: a, role: operator, password: plain}", "scrypt hash"),
        ("{name: a, role: admin, password: 'scrypt$1$2$3$4$5'}", "role must be one of"),
        ("{name: a, role: operator}", "name, role and password"),
    ],
)
def test_a_bad_users_file_is_a_config_error(tmp_path, entry, words):
    path = tmp_path / "users.yaml"
    path.write_text(f"users:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=words):
        load_users(path)


def test_the_station_inspects_only_while_a_job_executes():
    """OPC 40100-1: measurements in SingleExecution and ContinuousExecution only; Halted,
    Preoperational and Ready hold the station (its parts fail with reason halted)."""
    vs = VisionStates()
    assert vs.hold_reason() is None  # starting: the station's own business, not a hold
    vs.set_station("online")
    assert vs.hold_reason() is None
    vs.halt()
    assert "halted" in vs.hold_reason()
    vs.set_station("halted")  # the station holds because we asked: it still runs
    assert vs.top == "Halted"
    vs.reset()
    assert "Preoperational" in vs.hold_reason()
    vs.select_mode_automatic()
    assert "no job" in vs.hold_reason()
    vs.start(single=True)
    assert vs.hold_reason() is None
    vs.single_done()
    assert "no job" in vs.hold_reason()
    vs.start(single=False)
    assert vs.hold_reason() is None
    vs.set_station("degraded")  # Error: the station fails parts itself; no hold from the MES
    assert (vs.top, vs.hold_reason()) == ("Error", None)
    vs.stop()
    assert "no job" in vs.hold_reason()
