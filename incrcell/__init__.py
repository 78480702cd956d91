"""incrcell: incremental cell execution for Jupyter.

Put ``%load_ext incrcell`` in the first cell of a notebook.  Every cell is
keyed by its normalised source and the content of everything it reads; when
the key is unchanged (after a kernel restart, or in another notebook that
shares the cell), the cell's variables and outputs are restored from the cache
instead of running it.

The core (``analysis``, ``graph``, ``fingerprint``, ``serialise``, ``store``,
``engine``) does not import IPython; ``hooks``, ``outputs`` and ``magics`` are
the IPython glue loaded by :func:`load_ipython_extension`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext incrcell``; loading twice keeps the first session."""
    from .config import Config
    from .engine import Engine
    from .kernel import comm, hooks
    from .kernel.magics import IncrcellMagics

    if hooks._ACTIVE is not None and hooks._ACTIVE.shell is ipython:
        return
    kernel_hooks = hooks.KernelHooks(ipython, Engine(Config()))
    kernel_hooks.engine.is_session_name = kernel_hooks.is_session_name
    kernel_hooks.register()
    sidebar = comm.Sidebar(kernel_hooks)
    sidebar.open()
    ipython.register_magics(IncrcellMagics(ipython, kernel_hooks, sidebar))


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt sidebar extension (built from labextension/)."""
    return [{"src": "labextension", "dest": "incrcell"}]


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext incrcell``: back to plain IPython, nothing left behind."""
    from . import files
    from .kernel import comm, hooks

    active = hooks._ACTIVE
    if active is None or active.shell is not ipython:
        return
    active.unregister()
    files.uninstall()  # the file and native I/O wrappers stay in place while incrcell is loaded
    if comm._ACTIVE is not None:
        comm._ACTIVE.close()
    for kind in ("line", "cell"):
        ipython.magics_manager.magics[kind].pop("incrcell", None)
