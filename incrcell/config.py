"""Settings of one incrcell session, and where the cache lives by default."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path


def default_cache_dir() -> Path:
    """``$INCRCELL_CACHE_DIR``, else ``$XDG_CACHE_HOME/incrcell``, else ``~/.cache/incrcell``."""
    explicit = os.environ.get("INCRCELL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "incrcell"


_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*", re.IGNORECASE)
_NONE = {"", "none", "default", "off"}


def parse_size(text: str) -> int:
    """Bytes from ``20GB``, ``1.5 GiB``, ``500M``, ``123`` (decimal units; ``Ki``... binary)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"expected a size like 20GB, 500MB or 1.5GiB, got {text!r}")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def parse_age(text: str) -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``3600s``, ``2w``."""
    match = _AGE.fullmatch(text)
    if not match:
        raise ValueError(f"expected an age like 30d, 12h or 90m, got {text!r}")
    return float(match[1]) * _AGE_UNITS[match[2].lower()]


def format_size(nbytes: float) -> str:
    """``1.4 GB``: decimal units, one decimal from kB on."""
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """``30d``, ``12h``, ``90m``: the largest unit that divides it, as ``parse_age`` reads it."""
    for unit, size in sorted(_AGE_UNITS.items(), key=lambda item: -item[1]):
        if seconds >= size and math.isclose(seconds / size, round(seconds / size)):
            return f"{round(seconds / size)}{unit}"
    return f"{seconds:g}s"


def _from_env(variable: str, parse, default=None, unset=_NONE):
    """``parse($variable)``, or ``default`` when it is one of ``unset`` (any case); a bad
    value is ignored with one line."""
    text = os.environ.get(variable, "")
    if text.strip().lower() in unset:
        return default
    try:
        return parse(text)
    except ValueError as exc:
        warnings.warn(f"incrcell: ${variable} ignored: {exc}", stacklevel=3)
        return default


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected on/off (or true/false), got {text!r}")


@dataclass
class Config:
    """What a user can change with ``%incrcell config key=value``.

    ``cache_dir``: where entries live.  ``marker``: show a one-line note on
    each restored cell.  ``enabled``: ``%incrcell off`` turns caching off
    without unloading the extension.  ``quick``: run the cells that compute with
    plain values only rather than restore them, which would cost more (quick.py;
    ``$INCRCELL_QUICK``; off: every cell is cached).  ``max_size``: the cache's cap in bytes
    (``$INCRCELL_MAX_SIZE``; None: 10 GB or a tenth of the free space, whichever
    is smaller).  ``max_age``: entries unused for longer (seconds) are evicted
    (``$INCRCELL_MAX_AGE``; None: no limit).  ``remote``: a shared cache behind the
    local one, ``s3://BUCKET/PREFIX`` (``$INCRCELL_REMOTE``; "": none), read from or also
    written to as ``remote_mode`` says (``$INCRCELL_REMOTE_MODE``: read, the default, or
    readwrite).  ``trusted_keys``: public keys whose cache files are used, besides your
    own and ``$INCRCELL_TRUSTED_KEYS`` (comma-separated, or a file's path).
    """

    cache_dir: Path = field(default_factory=default_cache_dir)
    marker: bool = True
    enabled: bool = True
    quick: bool = field(
        default_factory=lambda: _from_env("INCRCELL_QUICK", _parse_bool, True, unset={""})
    )
    max_size: int | None = field(default_factory=lambda: _from_env("INCRCELL_MAX_SIZE", parse_size))
    max_age: float | None = field(default_factory=lambda: _from_env("INCRCELL_MAX_AGE", parse_age))
    remote: str = field(default_factory=lambda: os.environ.get("INCRCELL_REMOTE", "").strip())
    remote_mode: str = field(
        default_factory=lambda: os.environ.get("INCRCELL_REMOTE_MODE", "").strip().lower() or "read"
    )
    trusted_keys: str = ""

    def set(self, key: str, text: str) -> None:
        """Set one option from its text form; raises ValueError with a one-line message."""
        names = [f.name for f in fields(self)]
        if key not in names:
            raise ValueError(f"unknown option {key!r}; options are: {', '.join(names)}")
        if key == "cache_dir":
            if not text.strip():
                raise ValueError("cache_dir needs a path, e.g. cache_dir=~/.cache/incrcell")
            self.cache_dir = Path(text.strip()).expanduser()
        elif key == "max_size":
            self.max_size = None if text.strip().lower() in _NONE else parse_size(text)
        elif key == "max_age":
            self.max_age = None if text.strip().lower() in _NONE else parse_age(text)
        elif key == "remote":
            url = "" if text.strip().lower() in _NONE else text.strip()
            if url and not url.startswith("s3://"):
                raise ValueError(
                    f"expected a remote like s3://BUCKET/PREFIX (or off), got {text!r}"
                )
            self.remote = url
        elif key == "remote_mode":
            mode = text.strip().lower()
            if mode not in ("read", "readwrite"):
                raise ValueError(f"remote_mode is read or readwrite, not {text!r}")
            self.remote_mode = mode
        elif key == "trusted_keys":
            from .store.signing import parse_trusted  # raises ValueError for what is not a key

            parse_trusted(text)
            self.trusted_keys = text.strip()
        else:
            setattr(self, key, _parse_bool(text))

    def describe(self) -> str:
        shown = {
            "max_size": lambda v: "default" if v is None else format_size(v),
            "max_age": lambda v: "none" if v is None else format_age(v),
            "remote": lambda v: v or "none",
            "trusted_keys": lambda v: v or "none",
        }
        return "\n".join(
            f"{f.name} = {shown.get(f.name, str)(getattr(self, f.name))}" for f in fields(self)
        )
