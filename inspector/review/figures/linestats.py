"""A station's yield from what its recorder kept, without a second copy of the station.

The recorder keeps every rejected part and a sample of the passed ones, so kept parts alone
would make the yield look worse than it is. Every verdict carries the station's sequence
number, so the parts inspected in a stretch are the span of sequence numbers kept (a
restart starts them again: each run of rising numbers is counted on its own), and the
rejects are all there. The yield is then 1 - rejects / inspected.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Yield:
    inspected: int  # parts the line saw in the stretch (from the sequence numbers)
    rejected: int  # parts it failed (all kept by the recorder)
    kept: int  # parts the recorder kept

    @property
    def rate(self) -> float | None:
        return 1 - self.rejected / self.inspected if self.inspected else None


def line_yield(rows: list[dict]) -> Yield:
    """``rows``: (seq, result) in line order. Each run of rising sequence numbers counts
    max - min + 1 parts; a number that goes down is a restart."""
    inspected, rejected = 0, 0
    lo = hi = None
    for r in rows:
        seq = int(r["seq"] or 0)
        if hi is not None and seq <= hi:
            inspected += hi - lo + 1
            lo = hi = None
        lo = seq if lo is None else lo
        hi = seq
        rejected += r["result"] == "fail"
    if hi is not None:
        inspected += hi - lo + 1
    return Yield(inspected=max(inspected, len(rows)), rejected=rejected, kept=len(rows))
