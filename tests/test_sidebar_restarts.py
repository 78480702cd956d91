"""The sidebar's messages reach the kernel after every restart (issue 15, item 1).

JupyterLab 4.6 sends comm messages over kernel subshells, and after "Restart
Kernel and Run All Cells" with tiny cells the panel's messages used to target
a subshell the kernel had deleted: edits, the caching switch and Clear cache
were silently lost.  This drives one real JupyterLab page through that
sequence several times (the toolbar's button, a kernel change, a page
reload) and checks after each, in the kernel itself, that an edit marks a
cell stale, that the caching switch turned caching off and on, and that
Clear cache deleted the notebook's entries (the next Run All runs every
cell), and that Clear cache asks first and says what it removed.

One lab server and one page for the whole file.  The server loads the
sidebar built in this checkout (``incrcell/labextension``) when there is one,
else the installed one; the page is checked to run that build.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from test_sidebar_e2e import CHROMIUM, CHROMIUM_ARGS, KERNEL_CONNECTED, _free_port, _require_browser

pytestmark = [pytest.mark.browser, pytest.mark.kernel]

BUILD = Path(__file__).resolve().parent.parent / "incrcell" / "labextension"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 60_000
#: How long a message may take to reach the kernel, retries included (the panel retries
#: what the kernel has not acknowledged after a few idle seconds).
REACH_S = 20
#: Restart, kernel change or reload, then the checks; the loss this guards against showed
#: in most restarts with tiny cells, so a handful of rounds catches it.
ROUNDS = ["restart-run-all"] * 3 + ["change-kernel", "reload"]

CELLS = {"load": "%load_ext incrcell", "a": "a = 1", "b": "b = a + 1", "c": "c = b * 2\nc"}
TINY = [cell for cell in CELLS if cell != "load"]

ROW_STATES = """() => Object.fromEntries([...document.querySelectorAll('#incrcell-sidebar .jp-incrcell-row')]
  .map(row => [row.dataset.cellId, row.dataset.state]))"""
HAS_STATES = f"""expected => {{
  const states = ({ROW_STATES})();
  return Object.entries(expected).every(([id, state]) => states[id] === state);
}}"""
# What the kernel says, asked outside the panel: an execution on the notebook's kernel.
KERNEL_SAYS = """async code => {
  const kernel = window.__nb.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = '';
  future.onIOPub = msg => {
    if (msg.header.msg_type === 'stream') out += msg.content.text;
  };
  await future.done;
  return out;
}"""
SET_SOURCE = """([id, source]) => {
  const cell = window.__nb.content.widgets.find(cell => cell.model.id === id);
  cell.model.sharedModel.setSource(source);
}"""
CHANGE_KERNEL = """async () => {
  await window.__nb.sessionContext.changeKernel({name: 'python3'});
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
}"""
LOADED_BUILD = """() => JSON.parse(document.getElementById('jupyter-config-data').textContent)
  .federated_extensions.find(ext => ext.name === 'incrcell')?.load ?? null"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str | None, Path]]:
    """A running JupyterLab serving tiny.ipynb; yields (URL with token, the sidebar build's
    remoteEntry file name if the server loads this checkout's build, the server's log)."""
    _require_browser()
    tmp = tmp_path_factory.mktemp("restarts")
    root = tmp / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, id=cell_id) for cell_id, source in CELLS.items()]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "tiny.ipynb")
    settings = tmp / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {
        **os.environ,
        "INCRCELL_CACHE_DIR": str(tmp / "cache"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "JUPYTER_CONFIG_DIR": str(tmp / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
        "IPYTHONDIR": str(tmp / "ipython"),
    }
    entry = None
    if (BUILD / "package.json").exists():  # this checkout's build, ahead of any installed copy
        path = tmp / "jupyter-path"
        (path / "labextensions").mkdir(parents=True)
        (path / "labextensions" / "incrcell").symlink_to(BUILD)
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(path), env.get("JUPYTER_PATH")]))
        entry = next(BUILD.glob("static/remoteEntry.*.js")).name
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
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log_path = tmp / "jupyter-lab.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "jupyter lab did not start:\n" + log_path.read_text()
                    ) from None
                time.sleep(0.25)
        yield f"{url}/lab/tree/tiny.ipynb?token={token}", entry, log_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(log_path.read_text()[-5000:])  # shown if the test failed


def _until(page, condition, what: str, seconds: float = REACH_S) -> None:
    """Wait (polling the kernel, never sleeping blindly) until ``condition()`` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {seconds} s")
        page.wait_for_timeout(250)


def test_every_action_reaches_the_kernel_after_restarts(lab: tuple[str, str | None, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, entry, log = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        crashes: list[str] = []
        page.on("pageerror", lambda error: crashes.append(str(error)))
        retries: list[str] = []  # messages the panel had to send again (printed, not failed)
        page.on("console", lambda msg: "not acknowledged" in msg.text and retries.append(msg.text))
        sidebar = page.locator("#incrcell-sidebar")

        def open_page() -> None:
            page.goto(url)
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
            if entry is not None:  # the page runs this checkout's build
                assert page.evaluate(LOADED_BUILD).endswith(entry)
            page.evaluate("() => window.jupyterapp.commands.execute('incrcell:show-sidebar')")

        def kernel_says(code: str) -> str:
            return page.evaluate(KERNEL_SAYS, code)

        def states(expected: dict[str, str]) -> None:
            page.wait_for_function(HAS_STATES, arg=expected)

        def check_actions() -> None:
            """An edit, the switch and Clear cache, each checked in the kernel."""
            # an edit marks the cell stale (the kernel computes stale), undone it is not
            page.evaluate(SET_SOURCE, ["c", "c = b * 3\nc"])
            states({"c": "stale", "a": "ran", "b": "ran"})
            page.evaluate(SET_SOURCE, ["c", CELLS["c"]])
            states(dict.fromkeys(TINY, "ran"))
            # the caching switch reaches the kernel, both ways
            switch = sidebar.locator("input.jp-incrcell-enabled")
            switch.click()
            _until(page, lambda: "incrcell OFF" in kernel_says("%incrcell status"), "caching off")
            page.wait_for_function(
                "() => !document.querySelector('#incrcell-sidebar input.jp-incrcell-enabled').checked"
            )
            switch.click()
            _until(page, lambda: "incrcell on" in kernel_says("%incrcell status"), "caching on")
            # Clear cache asks first, then says what it removed; the rows keep what happened
            sidebar.locator(".jp-incrcell-clear").click()
            dialog = page.locator(".jp-Dialog")
            assert "Clear" in dialog.inner_text()
            dialog.locator(".jp-mod-accept").click()
            removed = page.locator(".Toastify__toast", has_text="removed")
            removed.last.wait_for()
            assert re.search(r"removed [1-9]\d* cache entr", removed.last.inner_text())
            states(dict.fromkeys(TINY, "ran"))

        try:
            open_page()
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            states(dict.fromkeys(TINY, "ran"))
            check_actions()
            for kind in ROUNDS:
                if kind == "restart-run-all":  # the toolbar's button, as a user presses it
                    page.locator(
                        ".jp-NotebookPanel-toolbar [data-command='notebook:restart-run-all']"
                    ).click()
                    page.locator(".jp-Dialog .jp-mod-accept").click()
                elif kind == "change-kernel":
                    page.evaluate(CHANGE_KERNEL)
                else:  # a new page on the same kernel
                    open_page()
                    page.evaluate(
                        "() => window.jupyterapp.commands.execute('notebook:run-all-cells')"
                    )
                # the last Clear cache reached the kernel: nothing restores
                states(dict.fromkeys(TINY, "ran"))
                check_actions()
            print(f"{len(retries)} messages sent again:", retries)
            assert not crashes, crashes
            # nothing was sent to a subshell the kernel did not have (the loss, in the log)
            assert "Unknown subshell_id" not in log.read_text()
        except Exception:
            print("sidebar:", sidebar.inner_text(timeout=5_000))
            page.screenshot(path=str(ARTIFACTS / "restarts-failure.png"))
            raise
        finally:
            browser.close()
