"""incrcell: incremental cell execution for Jupyter.

Put ``%load_ext incrcell`` in the first cell of a notebook.  Every cell is
keyed by its normalised source and the content of everything it reads; when
the key is unchanged (after a kernel restart, or in another notebook that
shares the cell), the cell's variables and outputs are restored from the cache
instead of running it.

The core (``analysis``, ``graph``, ``fingerprint``, ``serialise``, ``store``,
``engine``, ``predict``...) does not import IPython; everything that touches
IPython, ipykernel or comm is in :mod:`incrcell.kernel`, loaded only by
:func:`load_ipython_extension` (IPython and JupyterLab look for the functions
below here, so they stay here, as thin delegations).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext incrcell``; loading twice keeps the first session."""
    from .kernel import extension

    extension.load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext incrcell``: back to plain IPython, nothing left behind."""
    from .kernel import extension

    extension.unload(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt sidebar extension (built from labextension/)."""
    return [{"src": "labextension", "dest": "incrcell"}]
