"""What a GenICam camera says about each frame, turned into evidence a part can be matched by.

- ``CameraFrame``: a ``Frame`` that also carries the camera's frame id, its timestamp (camera
  clock, ns), whether every packet arrived, and how many frames were lost just before it.
  Its ``t_capture`` is the camera's timestamp on the host's clock, so the station's
  ``trigger.match_by: timestamp`` ties it to the trigger that fired it.
- ``FrameIds``: GigE Vision block ids are 16-bit and skip 0 (65535 -> 1); a gap is a frame
  that never arrived, a step backwards is a camera that restarted or a stale packet.
- ``CameraClock``: the offset from the camera's clock to the host's, estimated from the
  host's receive time of each frame (the smallest difference in a window: the frame that
  came fastest) and watched for drift and jumps.

Example::

    ids, clock = FrameIds(), CameraClock()
    lost = ids.advance(buffer_frame_id)          # 0 normally; 2 when two frames vanished
    t_unix = clock.to_host(camera_ns, host_ns)   # the exposure's time on the host clock
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass

from ..contract.records import Frame

log = logging.getLogger(__name__)

ID_RING = 65535  # GigE Vision 1.x block ids: 1..65535, then 1 again (0 is never sent)
MAX_GAP = 1024  # a bigger step is a camera that restarted, not 1024 lost frames


@dataclass(frozen=True, slots=True)
class CameraFrame(Frame):
    """A camera frame with the camera's own evidence of which exposure it is."""

    frame_id: int | None = None  # the camera's block id (16-bit on GigE Vision 1.x, wraps)
    camera_ts_ns: int | None = None  # the camera's timestamp, camera clock
    complete: bool = True  # False: packets missing, or never arrived (image is None)
    lost_before: int = 0  # frames that vanished between the previous one and this


def id_steps(prev: int, cur: int) -> int:
    """Steps from block id ``prev`` to ``cur``: 1 for the next frame, 2 when one was lost.

    16-bit ids run 1..65535 and wrap to 1 (GigE Vision never sends 0); ids beyond 16 bits
    (GigE Vision 2 extended ids, USB3 Vision) do not wrap. Negative: ``cur`` comes before
    ``prev`` (a stale or repeated frame, or a camera that started counting again).

    >>> id_steps(65535, 1), id_steps(65534, 2), id_steps(7, 8)
    (1, 3, 1)
    """
    if prev > ID_RING or cur > ID_RING or prev == 0 or cur == 0:
        return cur - prev
    steps = (cur - prev) % ID_RING
    if steps > ID_RING // 2:  # closer going backwards: an old frame, not 30,000 lost ones
        steps -= ID_RING
    return steps


class FrameIds:
    """Follows a camera's block ids; counts frames lost, restarts and stale frames."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.lost = 0  # frames that never arrived (gaps in the ids)
        self.restarts = 0  # the ids started again (camera reset or reconnect)
        self.stale = 0  # a frame older than one already delivered

    def reset(self) -> None:
        """A new acquisition: the next id starts a new count (cameras restart at 1 or 0)."""
        self.last = None

    def advance(self, frame_id: int) -> int | None:
        """How many frames vanished just before ``frame_id`` (0 normally); None for a frame
        older than the last one, which must not be delivered as a new exposure."""
        if self.last is None:
            self.last = frame_id
            return 0
        steps = id_steps(self.last, frame_id)
        if steps <= 0:
            restarted = frame_id in (0, 1) and steps < -16  # counting from the start again
            if steps > -MAX_GAP and not restarted:
                self.stale += 1
                return None
            steps = 1
            self.restarts += 1
        elif steps > MAX_GAP:
            self.restarts += 1
            steps = 1
        self.last = frame_id
        self.lost += steps - 1
        return steps - 1


class CameraClock:
    """Camera time (ns since the camera's epoch) to host Unix seconds.

    Every frame is a sample ``host_receive_ns - camera_ns`` = offset + transit. The
    smallest sample in the last ``window`` frames is the offset (plus the shortest transit,
    well under a millisecond on a direct link). ``jitter_s`` is the last frame's transit
    over that; a jump of the offset by more than ``jump_s`` (the camera restarted its
    clock, someone set it) starts the estimate again and counts in ``jumps``.
    """

    def __init__(self, window: int = 64, jump_s: float = 0.5) -> None:
        self.samples: collections.deque[int] = collections.deque(maxlen=window)
        self.jump_ns = int(jump_s * 1e9)
        self.offset_ns: int | None = None
        self.jitter_s = 0.0
        self.jumps = 0
        self.first_offset_ns: int | None = None  # for the drift since the estimate began
        self.first_camera_ns: int | None = None
        self.last_camera_ns: int | None = None

    def reset(self) -> None:
        self.samples.clear()
        self.offset_ns = self.first_offset_ns = self.first_camera_ns = None

    def update(self, camera_ns: int, host_ns: int) -> None:
        sample = host_ns - camera_ns
        if self.offset_ns is not None and abs(sample - self.offset_ns) > self.jump_ns:
            self.jumps += 1
            self.reset()
        self.samples.append(sample)
        self.offset_ns = min(self.samples)
        self.jitter_s = (sample - self.offset_ns) / 1e9
        if self.first_offset_ns is None:
            self.first_offset_ns, self.first_camera_ns = self.offset_ns, camera_ns
        self.last_camera_ns = camera_ns

    def to_host(self, camera_ns: int, host_ns: int) -> float:
        """The camera's ``camera_ns`` on the host's clock (Unix seconds), after taking the
        frame received at ``host_ns`` into the estimate."""
        self.update(camera_ns, host_ns)
        return (camera_ns + self.offset_ns) / 1e9

    @property
    def drift_ppm(self) -> float:
        """How fast the offset has moved since the estimate began (parts per million): a
        camera clock running fast or slow against the host's; NTP keeps the host in step."""
        if self.first_camera_ns is None or self.last_camera_ns is None:
            return 0.0
        span = self.last_camera_ns - self.first_camera_ns
        if span < 1e9:
            return 0.0
        return (self.offset_ns - self.first_offset_ns) / span * 1e6

    def summary(self) -> dict[str, float | int | None]:
        return {
            "clock_offset_s": None if self.offset_ns is None else self.offset_ns / 1e9,
            "clock_jitter_ms": self.jitter_s * 1000.0,
            "clock_drift_ppm": self.drift_ppm,
            "clock_jumps": self.jumps,
        }


class FrameAssembler:
    """What a camera delivered, as CameraFrames in order, with the evidence checked.

    ``add`` takes one delivered frame (its id, camera and host timestamps, and either its
    image or why it is broken) and queues, before it, one error frame for each frame id that
    never arrived, timed just before it: whatever part was waiting for that exposure is
    rejected instead of being given this frame. A frame older than one already delivered is
    dropped (its exposure has had its error frame). ``make`` builds each CameraFrame.
    """

    def __init__(self, make) -> None:
        self.make = make  # (image, t, t_mono, frame_id, camera_ns, error) -> CameraFrame
        self.ids = FrameIds()
        self.clock = CameraClock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.ready: collections.deque[CameraFrame] = collections.deque()

    def reset(self) -> None:
        """A new acquisition (after a reopen): ids and the clock start again."""
        self.ids.reset()
        self.clock.reset()
        self.ready.clear()

    def add(self, frame_id: int, camera_ns: int, host_ns: int, image, error: str = "") -> None:
        lost = self.ids.advance(frame_id)
        if lost is None:
            self.counts["stale"] += 1
            log.warning("camera frame %d came after a later one: dropped", frame_id)
            return
        t = self.clock.to_host(camera_ns, host_ns) if camera_ns else host_ns / 1e9
        now, now_mono = time.time(), time.monotonic()
        t_mono = now_mono - (now - t)
        for k in range(lost, 0, -1):
            self.counts["lost"] += 1
            missing = ((frame_id - k - 1) % ID_RING) + 1 if frame_id <= ID_RING else frame_id - k
            why = f"camera frame {missing} never arrived (lost between the camera and the station)"
            self.ready.append(self.make(None, t - k * 1e-6, t_mono - k * 1e-6, missing, None, why))
        self.counts["incomplete" if image is None else "frames"] += 1
        frame = self.make(image, t, t_mono, frame_id, camera_ns or None, error)
        self.ready.append(dataclasses.replace(frame, lost_before=lost) if lost else frame)

    def next(self) -> CameraFrame | None:
        return self.ready.popleft() if self.ready else None

    def take_all(self) -> list[CameraFrame]:
        out = list(self.ready)
        self.ready.clear()
        return out

    def stats(self) -> dict:
        return {
            **self.counts,
            **self.clock.summary(),
            "frame_id_restarts": self.ids.restarts,
        }
