"""Why a cell ran instead of being restored, in reasons a user can act on.

A cache key is a hash of its *components* (source, input digests, package
fingerprints, Python version, format; see keying.py).  When a cell misses,
comparing the components it has now with the ones it had the last time it
was recorded (its *lineage*, kept by the store per cell) names what changed.
With a team cache, the machine that recorded the cell left its lineage in the
remote too: a miss there is explained by what differs between that machine's
components and this one's ("pandas 3.1.1 here, 3.0.2 where it was recorded").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .keying import UNBOUND
from .reasons import Code, Reason, several


def _short(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def explain_miss(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any], *, elsewhere: bool = False
) -> Reason:
    """What differs between the last recorded components and these (one reason or SEVERAL).

    ``elsewhere``: ``previous`` are the components another machine recorded (its lineage
    note in the team cache), not a change here: the reason is RECORDED_ELSEWHERE, and
    versions are told as "here" and "where it was recorded".
    """
    if previous is None:
        return Code.FIRST_RUN()
    python, package = (
        (Code.PYTHON_DIFFERS, Code.PACKAGE_DIFFERS)
        if elsewhere
        else (Code.PYTHON_CHANGED, Code.PACKAGE_CHANGED)
    )
    reasons = []
    if previous.get("format") != current.get("format"):
        reasons.append(Code.FORMAT_CHANGED())
    if previous.get("python") != current.get("python"):
        reasons.append(
            python(
                before=_short(previous.get("python", "?")), after=_short(current.get("python", "?"))
            )
        )
    if previous.get("source") != current.get("source"):
        reasons.append(Code.SOURCE_CHANGED())
    before, now = previous.get("inputs", {}), current.get("inputs", {})
    for name in sorted(set(before) | set(now)):
        old, new = before.get(name), now.get(name)
        if old == new:
            continue
        if old is None:
            reasons.append(Code.NEW_INPUT(name=name))
        elif new is None:
            reasons.append(Code.INPUT_DROPPED(name=name))
        elif new == UNBOUND:
            reasons.append(Code.INPUT_UNDEFINED(name=name))
        elif old == UNBOUND:
            reasons.append(Code.INPUT_DEFINED(name=name))
        else:
            reasons.append(Code.INPUT_CHANGED(name=name))
    before, now = previous.get("packages", {}), current.get("packages", {})
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            reasons.append(
                package(
                    name=name,
                    before=_short(before.get(name, "none")),
                    after=_short(now.get(name, "none")),
                )
            )
    if not reasons:
        return Code.ENTRY_MISSING()
    return Code.RECORDED_ELSEWHERE(*reasons) if elsewhere else several(reasons)


def explain_upstream(name: str, upstream: str) -> Reason:
    """Why a cell will miss when its input ``name`` comes from ``upstream``, a cell that will run.

    Used where the input's new value cannot be known before that cell runs
    (the sidebar's predictions).
    """
    return Code.UPSTREAM_RUNS(name=name, upstream=upstream)
