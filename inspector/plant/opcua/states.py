"""The OPC 40100 VisionStateMachine of a station: the station's real state and the MES's
requests, combined (pure logic; ``server.py`` mirrors it into the address space).

The station's state decides first; the MES's methods choose within it:

    station offline, or Halt                 -> Halted
    station starting, or Reset               -> Preoperational
    station degraded (camera lost, quality)  -> Error (back to Operational by itself,
                                                ErrorToOperationalAuto, once the station is)
    otherwise                                -> Operational

Inside Operational, the automatic mode (VisionAutomaticModeStateMachine) says whether the
MES has a job running: Ready (no job), ContinuousExecution (every part is a result) or
SingleExecution (the next part is the job's result, then Ready again). Results reach the
MES (``ResultReady`` events, the result variables) only while a job runs, in Operational
or Error (a fail-safe reject in Error is a result too, with ResultState Failed).

The vision system inspects parts only while a job executes (OPC 40100-1: measurements are
taken in SingleExecution and ContinuousExecution; Halted, Preoperational and Ready take none).
Outside those states the station is on hold (``hold_reason``): every part still gets its
verdict for the reject gate, a ``fail`` with reason ``halted``, never a pass. The station's
own troubles (starting, Error) are not the MES's hold: the station fails parts itself there.
"""

from __future__ import annotations

from dataclasses import dataclass

HALTED, PREOPERATIONAL, ERROR, OPERATIONAL = "Halted", "Preoperational", "Error", "Operational"
INITIALIZED, READY, SINGLE, CONTINUOUS = (
    "Initialized",
    "Ready",
    "SingleExecution",
    "ContinuousExecution",
)
RUNNING = (SINGLE, CONTINUOUS)

# SEMI E10 states of SystemStateDataType (OPC 40100-1 12.22)
PRD, SBY, ENG, SDT, UDT = 1, 2, 3, 4, 5


class Refused(Exception):
    """A method that the state machine does not allow now (the caller gets BadInvalidState
    and this text in the log)."""


@dataclass
class Job:
    job_id: str
    meas_id: str = ""
    part_id: str = ""  # a single job for one named part (triggered by the MES)


class VisionStates:
    """``station``: the station's state (starting/online/degraded/offline);
    ``auto_start``: Operational and a continuous job as soon as the station is online."""

    def __init__(self, auto_start: bool = True) -> None:
        self.station = "starting"
        self.requested = OPERATIONAL if auto_start else PREOPERATIONAL
        self.auto = CONTINUOUS if auto_start else INITIALIZED
        self.job: Job | None = Job("job-1") if auto_start else None
        self._jobs = 1

    # -- what is -------------------------------------------------------------------------
    @property
    def top(self) -> str:
        if self.station == "offline" or self.requested == HALTED:
            return HALTED
        if self.station == "starting" or self.requested == PREOPERATIONAL:
            return PREOPERATIONAL
        if self.station == "degraded":
            return ERROR
        return OPERATIONAL

    @property
    def automatic(self) -> str | None:
        """The automatic mode's state (None outside Operational and Error)."""
        return self.auto if self.top in (OPERATIONAL, ERROR) else None

    def reporting(self) -> Job | None:
        """The job a verdict belongs to now, or None (results not reported)."""
        if self.top in (OPERATIONAL, ERROR) and self.auto in RUNNING:
            return self.job
        return None

    def hold_reason(self) -> str | None:
        """Why the station must not decide parts now (None: it inspects): the MES halted or
        reset the vision system, or no job executes (Ready, Initialized)."""
        if self.requested == HALTED:
            return "halted over OPC UA (Reset, SelectModeAutomatic and a Start resume inspection)"
        if self.requested == PREOPERATIONAL:
            return (
                "vision system Preoperational over OPC UA (SelectModeAutomatic and a Start "
                "resume inspection)"
            )
        if self.auto not in RUNNING:
            return (
                "no job running over OPC UA (StartContinuous or StartSingleJob resumes inspection)"
            )
        return None

    def system_state(self) -> int:
        top = self.top
        if top == OPERATIONAL:
            return PRD if self.auto in RUNNING else SBY
        if top == PREOPERATIONAL:
            return ENG
        if top == HALTED and self.station != "offline":
            return SDT
        return UDT

    # -- what changes it -----------------------------------------------------------------
    def set_station(self, state: str) -> None:
        # "halted": the station holds because this state machine asked it to; it runs
        self.station = "online" if state == "halted" else state

    def halt(self) -> None:
        if self.top == HALTED:
            raise Refused("already Halted")
        self.requested = HALTED
        self._end_job()

    def reset(self) -> None:
        top = self.top
        if top == PREOPERATIONAL:
            raise Refused("already Preoperational")
        if self.station == "offline":
            raise Refused("the station is offline: Halted until it runs again")
        self.requested = PREOPERATIONAL
        self._end_job()

    def select_mode_automatic(self) -> None:
        if self.top != PREOPERATIONAL:
            raise Refused(f"SelectModeAutomatic needs Preoperational, not {self.top}")
        if self.station == "starting":
            raise Refused("the station is still starting")
        self.requested = OPERATIONAL
        # Initialized -> Ready at once (InitializedToReadyAuto): the live model is prepared
        self.auto = READY

    def start(self, single: bool, meas_id: str = "", part_id: str = "") -> Job:
        if self.top not in (OPERATIONAL, ERROR) or self.auto != READY:
            where = self.top if self.top not in (OPERATIONAL, ERROR) else self.auto
            raise Refused(f"a job starts from Operational/Ready, not {where}")
        self._jobs += 1
        self.job = Job(f"job-{self._jobs}", meas_id, part_id if single else "")
        self.auto = SINGLE if single else CONTINUOUS
        return self.job

    def stop(self) -> None:
        if self.automatic not in RUNNING:
            raise Refused(f"no job is running ({self.automatic or self.top})")
        self.auto = READY
        self.job = None

    def single_done(self) -> None:
        """The single job's result was reported (SingleExecutionToReadyAuto)."""
        if self.auto == SINGLE:
            self.auto = READY
            self.job = None

    def _end_job(self) -> None:
        self.auto = INITIALIZED
        self.job = None
