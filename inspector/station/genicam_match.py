"""What a GenICam camera says about each frame, turned into evidence a part can be matched by.

- ``CameraFrame``: a ``Frame`` that also carries the camera's frame id, its timestamp (camera
  clock, ns), whether every packet arrived, and how many frames were lost just before it.
  Its ``t_capture`` is the camera's timestamp on the host's clock, so the station's
  ``trigger.match_by: timestamp`` ties it to the trigger that fired it.
- ``FrameAssembler``: GigE Vision block ids are 16-bit and skip 0 (65535 -> 1); a gap is a
  frame still on its way (resent packets) or one that never arrives, which becomes a reject
  of its own; a step backwards past every gap is a stale frame, a jump to the start a camera
  that restarted.
- ``CameraClock``: the offset from the camera's clock to the host's, estimated from the
  host's receive time of each frame (the smallest difference in a window: the frame that
  came fastest) and watched for drift and jumps.

Example::

    frames = FrameAssembler(make_frame, hold_s=0.2)
    frames.add(buffer_frame_id, camera_ns, host_receive_ns, image_or_None, error)
    frame = frames.next()   # in exposure order; None while a gap is held open
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


class CameraFrames:
    """For a camera source: its frames as ``CameraFrame``s, numbered in the order read."""

    index: int  # (and ``describe()``, the source's own)

    def _camera_frame(self, image, t, t_mono, fid, cam_ns, error: str = "") -> CameraFrame:
        self.index += 1
        return CameraFrame(
            image=image,
            t_capture=t,
            t_capture_mono=t_mono,
            index=self.index,
            origin=f"{self.describe()} frame {fid}",
            error=error,
            frame_id=fid,
            camera_ts_ns=cam_ns,
            complete=image is not None,
        )


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
    """What a camera delivered, as CameraFrames in exposure order, with the evidence checked.

    ``add`` takes one delivered frame: its id, camera and host timestamps, and either its
    image or why it is broken. A gap in the ids may be a frame still on its way (GigE Vision
    delivers a frame that waited for resent packets after the next one), so the frames after
    a gap are held up to ``hold_s`` for it. A frame that has not come by then becomes an error
    frame of its own, timed just before the frame after it: whatever part was waiting for
    that exposure is rejected instead of being given the next part's frame. A frame older
    than any gap (its place already filled or given up) is dropped and counted as stale.
    ``make`` builds each CameraFrame.
    """

    def __init__(self, make, hold_s: float = 0.2) -> None:
        self.make = make  # (image, t, t_mono, frame_id, camera_ns, error) -> CameraFrame
        self.hold_s = hold_s
        self.clock = CameraClock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.ready: collections.deque[CameraFrame] = collections.deque()
        self.reset()

    def reset(self) -> None:
        """A new acquisition (after a reopen): ids and the clock start again."""
        self.clock.reset()
        self.ready.clear()
        self.last_id: int | None = None  # the camera's id of the newest frame
        self.last_seq = 0  # the same, counted without wrapping
        self.held: dict[int, CameraFrame] = {}  # frames after a gap, by seq
        self.missing: dict[int, tuple[int, float]] = {}  # seq -> (camera id, give up at)

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def add(self, frame_id: int, camera_ns: int, host_ns: int, image, error: str = "") -> None:
        t = self.clock.to_host(camera_ns, host_ns) if camera_ns else host_ns / 1e9
        now, now_mono = time.time(), time.monotonic()
        frame = self.make(image, t, now_mono - (now - t), frame_id, camera_ns or None, error)
        steps = 1 if self.last_id is None else id_steps(self.last_id, frame_id)
        restarted = (frame_id in (0, 1) and steps < -16) or not -MAX_GAP < steps <= MAX_GAP
        if self.last_id is not None and restarted:  # the camera counts from the start again
            self.counts["frame_id_restarts"] += 1
            self._release(float("inf"))
            steps = 1
        seq = self.last_seq + steps
        if steps <= 0:
            if seq not in self.missing:
                self.counts["stale"] += 1
                log.warning("camera frame %d came after a later one: dropped", frame_id)
                return
            del self.missing[seq]
            self.counts["late"] += 1  # it came within the hold: in its place, no reject
        else:
            for k in range(self.last_seq + 1, seq):
                fid = (
                    ((frame_id - (seq - k) - 1) % ID_RING) + 1
                    if frame_id <= ID_RING
                    else frame_id - (seq - k)
                )
                self.missing[k] = (fid, now_mono + self.hold_s)
            if steps > 1:
                frame = dataclasses.replace(frame, lost_before=steps - 1)
            self.last_id, self.last_seq = frame_id, seq
        self.counts["incomplete" if image is None else "frames"] += 1
        self.held[seq] = frame
        self._release(now_mono)

    def _release(self, now_mono: float) -> None:
        """Give up on the missing frames whose hold is over; hand on every held frame with
        no gap left before it."""
        for seq in sorted(q for q, (_, until) in self.missing.items() if until <= now_mono):
            fid, _ = self.missing.pop(seq)
            after = min(q for q in self.held if q > seq)
            self.counts["lost"] += 1
            why = f"camera frame {fid} never arrived (lost between the camera and the station)"
            nxt = self.held[after]
            dt = (after - seq) * 1e-6
            self.held[seq] = self.make(
                None, nxt.t_capture - dt, nxt.t_capture_mono - dt, fid, None, why
            )
        first_gap = min(self.missing, default=None)
        for seq in sorted(self.held):
            if first_gap is not None and seq > first_gap:
                break
            self.ready.append(self.held.pop(seq))

    def next(self) -> CameraFrame | None:
        if self.held:
            self._release(time.monotonic())
        return self.ready.popleft() if self.ready else None

    def take_all(self) -> list[CameraFrame]:
        if self.held:
            self._release(time.monotonic())
        out = list(self.ready)
        self.ready.clear()
        return out

    def stats(self) -> dict:
        return {
            **self.counts,
            "frame_id_restarts": self.counts["frame_id_restarts"],
            **self.clock.summary(),
        }
