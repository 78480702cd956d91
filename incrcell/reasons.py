"""Why a cell ran, is uncacheable, failed or is stale: reasons as values.

A :class:`Reason` is a :class:`Code` and the details that matter (the input's
name, the file's path, the effect's kind and call...); it renders to one line
of words for users (``str(reason)``: ``%incrcell status``/``why``, the sidebar)
and carries its code to programs (the comm protocol's ``code`` field, tests).
Reasons compose where one explains another: a cell whose effect makes its
results vary (``VARIES`` with the ``EFFECT`` as its cause), a miss with several
changed components (``SEVERAL``, its causes joined by ``"; "``).

Codes are made into reasons by calling them: ``Code.INPUT_CHANGED(name="k")``.
The words live here, one template per code, so rewording a message never
touches the logic that decides, and tests assert codes, not prose.

Cell states and plan actions are enums too, valued by the words they always
had (``"restored"``, ``"record"``...), so that what is sent and shown is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class _Words(str, Enum):
    """An enum whose members are their value wherever text is expected (format, json)."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(self, spec)


class State(_Words):
    """What a cell's last execution did (``%incrcell status``, the sidebar)."""

    RESTORED = "restored"
    RAN = "ran"
    UNCACHEABLE = "uncacheable"
    ERROR = "error"


class Action(_Words):
    """What a plan does with a cell: restore it, run and record it, or just run it."""

    RESTORE = "restore"
    RECORD = "record"
    RUN = "run"


#: Effects on the world (effects.py) by kind, as the words a reason says.
EFFECTS = {
    "clock": "reads the clock",
    "entropy": "draws from fresh entropy",
    "network": "uses the network",
    "processes": "runs other processes",
    "keyboard": "asks for keyboard input",
    "setenv": "sets environment variables",
    "process identity": "reads values that name this process",
    "settings": "changes process-wide settings",
    "environment": "reads environment variables",
}

_CACHE_IT_ANYWAY = "start it with %%incrcell cache to cache it anyway"
_SEEN_AGAIN = "what the import alone leaves cannot be told apart"

# One template per code: ``str.format`` over the details, plus ``{cause}`` (the first
# cause), ``{causes}`` (all of them, joined by "; ") and ``{kind}`` rendered by EFFECTS.
_TEMPLATES = {
    # before anything is looked at
    "SYNTAX_ERROR": "the cell has a syntax error",
    "NOCACHE": "excluded with %%incrcell nocache",
    "FORCED": "forced with %%incrcell rerun",
    "INTERACTIVITY": "ast_node_interactivity is {value!r}: only 'last_expr' outputs are replayed",
    "CACHING_OFF": "caching was off (%incrcell on, or the sidebar's switch, turns it on)",
    "QUICK": (
        "computes with plain values (numbers, strings) only: running it again costs less "
        "than restoring it"
    ),
    "MAGIC": (
        "uses IPython magics or shell commands (% or !): their side effects cannot be captured"
    ),
    "HISTORY": "reads IPython's output history (`{name}`), which depends on execution order",
    "DYNAMIC": "uses {call}: its reads and writes cannot be seen",
    "SESSION_OBJECT": "uses the IPython session object `{name}`",
    "HIDDEN_READ": "`{name}` {how}: what it reads cannot be seen",
    # effects on the world
    "EFFECT": "{kind} (`{call}`)",
    "EFFECT_CALLED": "calls `{function}`, which {kind}",
    "MODULE_OBJECT_CHANGED": (
        "changes an object held by module `{module}` in place, which a restore cannot bring back"
    ),
    "ENVIRONMENT_DYNAMIC": "reads the environment other than by literal variable names",
    "VARIES": "{cause}: its results can change from run to run (" + _CACHE_IT_ANYWAY + ")",
    # keying
    "CACHE_UNUSABLE": "{detail}",
    "UNHASHABLE_INPUT": "input `{name}` ({type}) cannot be hashed: {detail}",
    "UNHASHABLE_STATE": "{item}, which an earlier cell changed, cannot be hashed: {detail}",
    "MODULE_CHANGED_ON_DISK": (
        "local module `{module}` changed on disk after it was imported: the code in memory "
        "is not the code on disk (restart the kernel to cache this cell again)"
    ),
    # a miss, by what changed in the key (explain.py)
    "FIRST_RUN": "first run: nothing recorded for this cell yet",
    "FORMAT_CHANGED": "the cache format changed (incrcell was upgraded)",
    "PYTHON_CHANGED": "Python changed ({before} -> {after})",
    "SOURCE_CHANGED": "source changed",
    "NEW_INPUT": "new input `{name}`",
    "INPUT_DROPPED": "no longer reads `{name}`",
    "INPUT_UNDEFINED": "input `{name}` is not defined",
    "INPUT_DEFINED": "input `{name}` is now defined",
    "INPUT_CHANGED": "input `{name}` changed",
    "PACKAGE_CHANGED": "package `{name}` changed ({before} -> {after})",
    "ENTRY_MISSING": "its cache entry was cleared or could not be read",
    "SEVERAL": "{causes}",
    # a miss, by what differs from the components another machine recorded (the team cache)
    "RECORDED_ELSEWHERE": "recorded by another machine with other key components: {causes}",
    "PYTHON_DIFFERS": "Python {after} here, {before} where it was recorded",
    "PACKAGE_DIFFERS": "package `{name}` {after} here, {before} where it was recorded",
    # an entry found, but not restorable now
    "OTHER_CWD": "it read its working directory or files relative to it, and ran in {cwd}",
    "FILE_CHANGED": "file `{path}` changed",
    "FILE_DELETED": "file `{path}` was deleted",
    "FILES_MATCHING_CHANGED": "the files matching `{pattern}` changed",
    "PATH_CREATED": "`{path}` was created",
    "PATH_DELETED": "`{path}` was deleted",
    "DIRECTORY_CHANGED": "directory `{path}` changed",
    "RANDOM_STATE": (
        "the global random state of `{name}` is not the one it drew from when recorded "
        "(seed it before drawing to make this cell cacheable)"
    ),
    "INTERPRETER_STATE": (
        "{item} is not what it was when the cell was recorded, and the cell changes it"
    ),
    "REFERS_CHANGED": (
        "its values refer to `{name}`, which is not what it was when the cell was recorded"
    ),
    "THROUGH_CHANGED": (
        "it changes `{name}` through an object they share, and `{name}` is not what it was "
        "when the cell was recorded"
    ),
    "ENTRY_UNREADABLE": "its cache entry could not be read ({detail})",
    "CWD_GONE": "the directory it changes to ({directory}) no longer exists",
    # after it ran
    "RESTORE_FAILED": "failed or was interrupted while incrcell restored it",
    "RAISED": "raised an exception: nothing was cached",
    "RECORDING_INTERRUPTED": (
        "incrcell was interrupted while recording it: it ran, but is not cached"
    ),
    "LATE_GLOBALS": (
        "calls `{call}()`, which sets globals of a module the cell imports for the first "
        "time: " + _SEEN_AGAIN + " (import it in an earlier cell to cache this one)"
    ),
    "NEW_MODULE_ATTRIBUTES": (
        "sets attributes of module `{module}`, which was not imported before the cell: "
        + _SEEN_AGAIN
        + " (set them in a later cell to cache this one)"
    ),
    "MODULE_REMOVED": (
        "removes module `{module}` from sys.modules: a restore cannot bring that back"
    ),
    "MODULE_INSERTED": "puts `{module}` into sys.modules by hand: a restore cannot bring that back",
    "THREAD_RUNNING": (
        "starts thread `{thread}`, still running when the cell ended: what it does next "
        "cannot be replayed"
    ),
    "TOO_MANY_HOLDERS": (
        "changes `{name}` in place, and too many other objects refer to it to find every "
        "value that changed with it"
    ),
    "FILE_BYPASSED": (
        "file `{path}` changed while it ran without being opened by it (a stream or memory "
        "map opened before the cell): incrcell cannot store or replay that write"
    ),
    "DESCRIPTOR_LISTING": (
        "lists files relative to a directory descriptor: its reads and writes cannot be seen"
    ),
    "DESCRIPTOR_UNNAMED": (
        "lists or checks a file through a descriptor incrcell cannot name: its reads and "
        "writes cannot be seen"
    ),
    "NATIVE_UNWATCHED": "native file access could not be watched",
    "NATIVE_UNCHECKED": "native file access could not be checked",
    "NATIVE_UNSEEN": "could not see the files `{call}` uses",
    "NATIVE_UNPATCHED": "could not watch the file access of `{module}`",
    "REMOTE_DATA": "reads `{url}` through `{call}`: remote data is not an input incrcell can key",
    "NATIVE_LISTING": (
        "reads directory `{path}` through `{call}`: its listing is not an input incrcell can key"
    ),
    "UNNAMED_FILES": "`{call}` reads files whose names incrcell cannot find",
    "MAYBE_UNNAMED_FILES": "`{call}` may read files whose names incrcell cannot find",
    "READS_AND_WRITES_FILE": (
        "reads and writes file `{path}`: its content before the cell is an input incrcell "
        "cannot restore"
    ),
    "FILE_LEFT_OPEN": (
        "leaves file `{path}` open for writing: what is written to it after the cell "
        "cannot be stored"
    ),
    "SPECIAL_FILE": (
        "reads `{path}`, which is not a regular file (a pipe, device or socket): its "
        "content cannot be keyed"
    ),
    "UNREADABLE_OUTPUT_FILE": "wrote a file it cannot read back ({detail})",
    "FRESH_RANDOM": (
        "draws from the global random generator of `{name}`, which holds fresh entropy (the "
        "notebook did not seed it): its results change from run to run (seed it first, or "
        "start the cell with %%incrcell cache to cache it anyway)"
    ),
    "NOT_SAVED": "could not be saved: {detail}",
    "SHARES_UNWRITTEN": (
        "writes a value that shares objects with `{name}`, which it does not write: a "
        "restore would copy them"
    ),
    "UNPICKLABLE": "writes {what} ({type}), which cannot be pickled: {detail}",
    "UNPICKLABLE_TOGETHER": "writes values that cannot be pickled together: {detail}",
    "UNHASHABLE_OUTPUT": "writes {what} ({type}), which cannot be hashed: {detail}",
    "THROUGH_UNHASHABLE": (
        "changes `{name}` through an object they share, and what `{name}` held before "
        "cannot be hashed"
    ),
    "THROUGH_UNKNOWN": (
        "changes `{name}` through an object they share, which was not known before it ran: "
        "what it held before is part of the key from the next run on"
    ),
    "UNLOADABLE": "writes values that cannot be loaded back from their pickle ({detail})",
    "LOSSY": (
        "writes {what} ({type}), which its pickle does not bring back as it was (its "
        "__reduce__ or __getstate__ leaves out part of what it holds)"
    ),
    "SHARING_LOST": ("writes values sharing objects (closure cells...) that pickling copies apart"),
    # the sidebar (predict.py)
    "UNCHANGED": "source and inputs unchanged",
    "UPSTREAM_RUNS": "input `{name}` comes from {upstream}, which will run",
    "UPSTREAM_STEADY": (
        "input `{name}` comes from {upstream}, which runs every time: restored if it gives "
        "the same value again"
    ),
    "SOURCE_CHANGED_SINCE": "source changed since it ran",
    "FILE_CHANGED_ON_DISK": "file `{path}` changed on disk",
    "UPSTREAM_STALE": "{upstream} is stale",
    "UPSTREAM_RAN_AGAIN": "{upstream} ran again after it",
    "CELLS_NOT_RECEIVED": "the notebook's cells have not been received",
    "REMOTE_PENDING": "in the team cache, not fetched yet",
}


class Code(_Words):
    """What kind of reason; calling one makes a :class:`Reason`: ``Code.FIRST_RUN()``."""

    SYNTAX_ERROR = "SYNTAX_ERROR"
    NOCACHE = "NOCACHE"
    FORCED = "FORCED"
    INTERACTIVITY = "INTERACTIVITY"
    CACHING_OFF = "CACHING_OFF"
    QUICK = "QUICK"
    MAGIC = "MAGIC"
    HISTORY = "HISTORY"
    DYNAMIC = "DYNAMIC"
    SESSION_OBJECT = "SESSION_OBJECT"
    HIDDEN_READ = "HIDDEN_READ"
    EFFECT = "EFFECT"
    EFFECT_CALLED = "EFFECT_CALLED"
    MODULE_OBJECT_CHANGED = "MODULE_OBJECT_CHANGED"
    ENVIRONMENT_DYNAMIC = "ENVIRONMENT_DYNAMIC"
    VARIES = "VARIES"
    CACHE_UNUSABLE = "CACHE_UNUSABLE"
    UNHASHABLE_INPUT = "UNHASHABLE_INPUT"
    UNHASHABLE_STATE = "UNHASHABLE_STATE"
    MODULE_CHANGED_ON_DISK = "MODULE_CHANGED_ON_DISK"
    FIRST_RUN = "FIRST_RUN"
    FORMAT_CHANGED = "FORMAT_CHANGED"
    PYTHON_CHANGED = "PYTHON_CHANGED"
    SOURCE_CHANGED = "SOURCE_CHANGED"
    NEW_INPUT = "NEW_INPUT"
    INPUT_DROPPED = "INPUT_DROPPED"
    INPUT_UNDEFINED = "INPUT_UNDEFINED"
    INPUT_DEFINED = "INPUT_DEFINED"
    INPUT_CHANGED = "INPUT_CHANGED"
    PACKAGE_CHANGED = "PACKAGE_CHANGED"
    ENTRY_MISSING = "ENTRY_MISSING"
    SEVERAL = "SEVERAL"
    RECORDED_ELSEWHERE = "RECORDED_ELSEWHERE"
    PYTHON_DIFFERS = "PYTHON_DIFFERS"
    PACKAGE_DIFFERS = "PACKAGE_DIFFERS"
    REMOTE_PENDING = "REMOTE_PENDING"
    OTHER_CWD = "OTHER_CWD"
    FILE_CHANGED = "FILE_CHANGED"
    FILE_DELETED = "FILE_DELETED"
    FILES_MATCHING_CHANGED = "FILES_MATCHING_CHANGED"
    PATH_CREATED = "PATH_CREATED"
    PATH_DELETED = "PATH_DELETED"
    DIRECTORY_CHANGED = "DIRECTORY_CHANGED"
    RANDOM_STATE = "RANDOM_STATE"
    INTERPRETER_STATE = "INTERPRETER_STATE"
    REFERS_CHANGED = "REFERS_CHANGED"
    THROUGH_CHANGED = "THROUGH_CHANGED"
    ENTRY_UNREADABLE = "ENTRY_UNREADABLE"
    CWD_GONE = "CWD_GONE"
    RESTORE_FAILED = "RESTORE_FAILED"
    RAISED = "RAISED"
    RECORDING_INTERRUPTED = "RECORDING_INTERRUPTED"
    LATE_GLOBALS = "LATE_GLOBALS"
    NEW_MODULE_ATTRIBUTES = "NEW_MODULE_ATTRIBUTES"
    MODULE_REMOVED = "MODULE_REMOVED"
    MODULE_INSERTED = "MODULE_INSERTED"
    THREAD_RUNNING = "THREAD_RUNNING"
    TOO_MANY_HOLDERS = "TOO_MANY_HOLDERS"
    FILE_BYPASSED = "FILE_BYPASSED"
    DESCRIPTOR_LISTING = "DESCRIPTOR_LISTING"
    DESCRIPTOR_UNNAMED = "DESCRIPTOR_UNNAMED"
    NATIVE_UNWATCHED = "NATIVE_UNWATCHED"
    NATIVE_UNCHECKED = "NATIVE_UNCHECKED"
    NATIVE_UNSEEN = "NATIVE_UNSEEN"
    NATIVE_UNPATCHED = "NATIVE_UNPATCHED"
    REMOTE_DATA = "REMOTE_DATA"
    NATIVE_LISTING = "NATIVE_LISTING"
    UNNAMED_FILES = "UNNAMED_FILES"
    MAYBE_UNNAMED_FILES = "MAYBE_UNNAMED_FILES"
    READS_AND_WRITES_FILE = "READS_AND_WRITES_FILE"
    FILE_LEFT_OPEN = "FILE_LEFT_OPEN"
    SPECIAL_FILE = "SPECIAL_FILE"
    UNREADABLE_OUTPUT_FILE = "UNREADABLE_OUTPUT_FILE"
    FRESH_RANDOM = "FRESH_RANDOM"
    NOT_SAVED = "NOT_SAVED"
    SHARES_UNWRITTEN = "SHARES_UNWRITTEN"
    UNPICKLABLE = "UNPICKLABLE"
    UNPICKLABLE_TOGETHER = "UNPICKLABLE_TOGETHER"
    UNHASHABLE_OUTPUT = "UNHASHABLE_OUTPUT"
    THROUGH_UNHASHABLE = "THROUGH_UNHASHABLE"
    THROUGH_UNKNOWN = "THROUGH_UNKNOWN"
    UNLOADABLE = "UNLOADABLE"
    LOSSY = "LOSSY"
    SHARING_LOST = "SHARING_LOST"
    UNCHANGED = "UNCHANGED"
    UPSTREAM_RUNS = "UPSTREAM_RUNS"
    UPSTREAM_STEADY = "UPSTREAM_STEADY"
    SOURCE_CHANGED_SINCE = "SOURCE_CHANGED_SINCE"
    FILE_CHANGED_ON_DISK = "FILE_CHANGED_ON_DISK"
    UPSTREAM_STALE = "UPSTREAM_STALE"
    UPSTREAM_RAN_AGAIN = "UPSTREAM_RAN_AGAIN"
    CELLS_NOT_RECEIVED = "CELLS_NOT_RECEIVED"

    def __call__(self, *causes: Reason, **details: Any) -> Reason:
        """The reason of this code with these causes and details."""
        return Reason(self, details, causes)


@dataclass(frozen=True)
class Reason:
    """Why, as a value: a code, its details, and the reasons it wraps (its causes).

    Equal when code, details and causes are; ``str()`` is the one line users read.
    """

    code: Code
    details: dict[str, Any] = field(default_factory=dict)
    causes: tuple[Reason, ...] = ()

    def __str__(self) -> str:
        causes = [str(cause) for cause in self.causes]
        details = dict(self.details)
        if "kind" in details:
            details["kind"] = EFFECTS[details["kind"]]
        return _TEMPLATES[self.code].format(
            **details, cause=causes[0] if causes else "", causes="; ".join(causes)
        )

    def __repr__(self) -> str:
        inside = [repr(cause) for cause in self.causes]
        inside += [f"{name}={value!r}" for name, value in self.details.items()]
        return f"{self.code.value}({', '.join(inside)})"

    def __contains__(self, part: object) -> bool:
        """Whether this reason is or wraps ``part``: a Reason (equal), or a Code."""
        if not isinstance(part, (Reason, Code)):
            raise TypeError(f"a Reason holds reasons and codes, not {type(part).__name__}")
        if self == part or self.code is part:
            return True
        return any(part in cause for cause in self.causes)

    def codes(self) -> list[Code]:
        """This reason's code and its causes', depth first."""
        return [self.code, *(code for cause in self.causes for code in cause.codes())]

    def find(self, code: Code) -> Reason | None:
        """The first reason of ``code`` among this one and its causes (None if none)."""
        if self.code is code:
            return self
        for cause in self.causes:
            found = cause.find(code)
            if found is not None:
                return found
        return None


def several(reasons: list[Reason]) -> Reason:
    """One reason standing for ``reasons`` (at least one): itself alone, or ``SEVERAL``."""
    return reasons[0] if len(reasons) == 1 else Code.SEVERAL(*reasons)


def text(reason: Reason | None) -> str:
    """What users read for ``reason``: its words, or '' for none (a restore)."""
    return "" if reason is None else str(reason)


def code(reason: Reason | None) -> str:
    """The code sent beside the words of ``reason`` ('' for none)."""
    return "" if reason is None else reason.code.value
