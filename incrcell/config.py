"""Settings of one incrcell session, and where the cache lives by default."""

from __future__ import annotations

import os
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
    without unloading the extension.
    """

    cache_dir: Path = field(default_factory=default_cache_dir)
    marker: bool = True
    enabled: bool = True

    def set(self, key: str, text: str) -> None:
        """Set one option from its text form; raises ValueError with a one-line message."""
        names = [f.name for f in fields(self)]
        if key not in names:
            raise ValueError(f"unknown option {key!r}; options are: {', '.join(names)}")
        if key == "cache_dir":
            if not text.strip():
                raise ValueError("cache_dir needs a path, e.g. cache_dir=~/.cache/incrcell")
            self.cache_dir = Path(text.strip()).expanduser()
        else:
            setattr(self, key, _parse_bool(text))

    def describe(self) -> str:
        return "\n".join(f"{f.name} = {getattr(self, f.name)}" for f in fields(self))
