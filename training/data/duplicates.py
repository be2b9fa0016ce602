"""Images that appear in two splits: the same file (SHA-256) or the same picture (a 64-bit
difference hash within ``max_bits``, confirmed on normalised thumbnails). ``prepare`` warns
about them: the validation and test figures may be optimistic."""

from __future__ import annotations

import numpy as np

# Near-duplicates: a difference hash within ``max_bits`` finds candidates, and the mean
# absolute difference of normalised thumbnails confirms them. Measured on ELPV (2026-11):
# a re-encoded copy (JPEG q80, +10 grey levels) differs by 0.008; the closest pairs of
# distinct solar cells by 0.04 and more (cells share their busbar layout, so the hash
# alone flagged over a thousand pairs).
NEAR_MAE = 0.03


def cross_split_duplicates(splits: dict, max_bits: int, limit: int = 200) -> list:
    """Pairs of images in different splits (``datasets.Split`` by name, in split order) that
    are the same file or look the same."""
    found = []
    names = [n for n in splits if len(splits[n].files)]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            sa, sb = splits[a], splits[b]
            by_sha = {h: k for k, h in enumerate(sa.sha)}
            exact = set()
            for k, h in enumerate(sb.sha):
                if h in by_sha:
                    exact.add((by_sha[h], k))
                    found.append(_dup(a, sa, by_sha[h], b, sb, k, 0, "exact"))
            if max_bits < 0:
                continue
            for k in range(len(sb.files)):  # one row of distances at a time: O(n) memory
                dist = _popcount(sa.dhash ^ sb.dhash[k])
                for j in np.nonzero(dist <= max_bits)[0]:
                    if (int(j), k) in exact:
                        continue
                    mae = float(np.abs(sa.thumbs[j] - sb.thumbs[k]).mean())
                    if mae <= NEAR_MAE:
                        found.append(_dup(a, sa, int(j), b, sb, k, int(dist[j]), "near"))
    found.sort(key=lambda d: d["distance"])
    return found[:limit] if limit else found


def _dup(a, sa, j, b, sb, k, dist, kind):
    return {
        "kind": kind,
        "distance": dist,
        a: sa.files[j],
        b: sb.files[k],
        "labels_differ": bool(sa.y[j] != sb.y[k]),
    }


def _popcount(v: np.ndarray) -> np.ndarray:
    return np.unpackbits(v.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
