"""Why a cell ran instead of being restored, in words a user can act on.

A cache key is a hash of its *components* (source, input digests, package
fingerprints, Python version, format).  When a cell misses, comparing the
components it has now with the ones it had the last time it was recorded
(its *lineage*, kept by the store per cell) names what changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

UNBOUND = "<unbound>"
BOUND = "<bound>"  # a name whose existence, not content, is an input (``del x``)


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def explain_miss(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> str:
    """One line saying what differs between the last recorded components and these."""
    if previous is None:
        return "first run: nothing recorded for this cell yet"
    reasons = []
    if previous.get("format") != current.get("format"):
        reasons.append("the cache format changed (incrcell was upgraded)")
    if previous.get("python") != current.get("python"):
        reasons.append(
            f"Python changed ({_short(previous.get('python', '?'))} -> "
            f"{_short(current.get('python', '?'))})"
        )
    if previous.get("source") != current.get("source"):
        reasons.append("source changed")
    before, now = previous.get("inputs", {}), current.get("inputs", {})
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if old is None:
            reasons.append(f"new input `{name}`")
        elif new is None:
            reasons.append(f"no longer reads `{name}`")
        elif new == UNBOUND:
            reasons.append(f"input `{name}` is not defined")
        elif old == UNBOUND:
            reasons.append(f"input `{name}` is now defined")
        else:
            reasons.append(f"input `{name}` changed")
    before, now = previous.get("packages", {}), current.get("packages", {})
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            reasons.append(
                f"package `{name}` changed ({_short(before.get(name, 'none'))} -> "
                f"{_short(now.get(name, 'none'))})"
            )
    if not reasons:
        return "its cache entry was cleared or could not be read"
    return "; ".join(reasons)


def explain_upstream(name: str, upstream: str) -> str:
    """Why a cell will miss when its input ``name`` comes from ``upstream``, a cell that will run.

    Used where the input's new value cannot be known before that cell runs
    (the sidebar's predictions).
    """
    return f"input `{name}` comes from {upstream}, which will run"
