"""What the browser tests (tests/test_sidebar_*.py) share: a Jupyter server, a Chromium page.

``jupyter_server`` starts ``jupyter lab`` on 127.0.0.1 (random port and token; its
own config, data, runtime, settings, workspaces and IPython directories; news and
update checks off) serving the notebooks it is given, in JupyterLab and Notebook 7.
The sidebar it loads is this checkout's build (``incrcell/labextension``, put first on
JUPYTER_PATH) when there is one, else the installed copy; its kernels import this
checkout's incrcell (PYTHONPATH).  ``chromium_page`` opens a page in Debian's headless
chromium driven by Playwright, collects the page's uncaught errors, and on a failure
prints the sidebar's text and saves a screenshot to test-artifacts/.  The page's
probes (``KERNEL_CONNECTED``, ``HAS_STATES``...) are JavaScript for ``page.evaluate``
and ``page.wait_for_function``.

Without Playwright or /usr/bin/chromium the tests skip, except in CI (``CI`` set),
where that is a failure: .ci/run installs both.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

CHECKOUT = Path(__file__).resolve().parent.parent
#: This checkout's build of the sidebar (``npm run build`` in labextension/ or ``pip install -e .``).
BUILD = CHECKOUT / "incrcell" / "labextension"
ARTIFACTS = CHECKOUT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000
#: How long the server may take to answer (a busy machine starts it slowly).
START_S = 180

# The notebook panel, kept in window.__nb once the page is up: the sidebar
# taking focus must not change which notebook the steps act on.
KERNEL_CONNECTED = """() => {
  const nb = window.jupyterapp?.shell.currentWidget;
  if (nb?.sessionContext?.session?.kernel?.connectionStatus !== 'connected') return false;
  window.__nb = nb;
  return true;
}"""
ROW_STATES = """() => Object.fromEntries([...document.querySelectorAll('#incrcell-sidebar .jp-incrcell-row')]
  .map(row => [row.dataset.cellId, row.dataset.state]))"""
HAS_STATES = f"""expected => {{
  const states = ({ROW_STATES})();
  return Object.entries(expected).every(([id, state]) => states[id] === state);
}}"""
RUN_ALL = """async () => {
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
}"""
RESTART = """async () => {
  await window.__nb.sessionContext.restartKernel();
  await window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');
}"""
SET_SOURCE = """([id, source]) => {
  const cell = window.__nb.content.widgets.find(cell => cell.model.id === id);
  cell.model.sharedModel.setSource(source);
}"""
#: The file the page loaded this extension from (its remoteEntry), as the server announced it.
LOADED_BUILD = """() => JSON.parse(document.getElementById('jupyter-config-data').textContent)
  .federated_extensions.find(ext => ext.name === 'incrcell')?.load ?? null"""
#: The parts of the panel that show something (the tab's content, not the empty space below).
PANEL_PARTS = (
    "#incrcell-sidebar .jp-incrcell-rows:not([hidden]), #incrcell-sidebar .jp-incrcell-graph:not([hidden]),"
    " #incrcell-sidebar .jp-incrcell-variables:not([hidden]),"
    " #incrcell-sidebar .jp-incrcell-cacheview:not([hidden])"
)


def require_browser() -> None:
    """Skip (fail in CI) unless Playwright and Debian's chromium are installed."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    else:
        if CHROMIUM.exists():
            return
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Server:
    """A running Jupyter server: its base URL and token, notebook directory and log."""

    url: str
    token: str
    root: Path
    log: Path
    #: The remoteEntry file of this checkout's build when the server loads it, else None.
    entry: str | None

    def page(self, path: str) -> str:
        """The URL of ``path`` (``lab/tree/x.ipynb``, ``notebooks/x.ipynb``) with the token."""
        return f"{self.url}/{path}?token={self.token}"


def _use_build(tmp: Path, env: dict[str, str]) -> str | None:
    """Put this checkout's build first on ``env``'s JUPYTER_PATH if there is one (its
    remoteEntry file name is returned); else the server loads the installed copy (None)."""
    if not (BUILD / "package.json").exists():
        return None
    path = tmp / "jupyter-path"
    (path / "labextensions").mkdir(parents=True)
    (path / "labextensions" / "incrcell").symlink_to(BUILD)
    env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(path), env.get("JUPYTER_PATH")]))
    return next(BUILD.glob("static/remoteEntry.*.js")).name


@contextmanager
def jupyter_server(
    tmp: Path, notebooks: Mapping[str, Iterable[tuple[str, str]]], env: Mapping[str, str]
) -> Iterator[Server]:
    """A running ``jupyter lab`` in ``tmp`` serving ``notebooks`` ({name: [(cell id, source)]},
    written as ``root/name.ipynb``), with ``env`` (the cache's directories) on top of ours.
    Stopped on exit, when the end of its log is printed (pytest shows it if the test failed)."""
    require_browser()
    root = tmp / "notebooks"
    root.mkdir()
    for name, cells in notebooks.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source, id=cell_id) for cell_id, source in cells]
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nbformat.write(nb, root / f"{name}.ipynb")
    settings = tmp / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    full_env = {
        **os.environ,
        **env,
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"),
    }
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(CHECKOUT), full_env.get("PYTHONPATH")])
    )
    entry = _use_build(tmp, full_env)
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        "--ServerApp.port_retries=0",
        "--LabApp.expose_app_in_browser=True",
        "--JupyterNotebookApp.expose_app_in_browser=True",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = tmp / "jupyter.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("jupyter did not start:\n" + log_path.read_text()) from None
                time.sleep(0.25)
        yield Server(url, token, root, log_path, entry)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(log_path.read_text()[-5000:])  # shown if the test failed


def open_lab(page: Any, server: Server, path: str) -> None:
    """Open the notebook ``path`` in JupyterLab, wait for its kernel (``window.__nb``), check
    that the page runs this checkout's build when the server loads it, and show the sidebar."""
    page.goto(server.page(f"lab/tree/{path}"))
    page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
    if server.entry is not None:
        assert page.evaluate(LOADED_BUILD).endswith(server.entry)
    page.evaluate("() => window.jupyterapp.commands.execute('incrcell:show-sidebar')")


@contextmanager
def chromium_page(failure: str, **options: Any) -> Iterator[tuple[Any, list[str]]]:
    """A new page (``options`` as Playwright's ``new_page``) in a headless chromium, and the
    list its uncaught errors (with their stacks) go to.  An exception from the block prints
    the sidebar's text and saves a screenshot of the page as ARTIFACTS/``failure``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(**options)
            page.set_default_timeout(TIMEOUT_MS)
            crashes: list[str] = []
            page.on("pageerror", lambda error: crashes.append(f"{error}\n{error.stack}"))
            try:
                yield page, crashes
            except Exception:
                # What the page showed, for the failure report (the test's own error stays).
                with suppress(Exception):
                    print("sidebar:", page.locator("#incrcell-sidebar").inner_text(timeout=5_000))
                page.screenshot(path=str(ARTIFACTS / failure))
                raise
        finally:
            browser.close()


def screenshot_sidebar(page: Any, path: Path) -> None:
    """The sidebar down to the end of what it shows (not the empty space below)."""
    box = page.locator("#incrcell-sidebar").bounding_box()
    bottom = page.evaluate(
        """selectors => Math.max(...[...document.querySelectorAll(selectors)]
             .map(node => node.getBoundingClientRect().bottom))""",
        PANEL_PARTS,
    )
    height = min(bottom + 8, box["y"] + box["height"]) - box["y"]
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), clip={**box, "height": height})
