"""End to end: the sidebar in a real JupyterLab, driven by a real headless Chromium.

A ``jupyter lab`` server on 127.0.0.1 (random port and token, its own config,
data, settings, workspaces and cache directories) serves a small notebook
with a dependency chain; Debian's chromium, driven by Playwright, opens it,
runs all, restarts the kernel, runs all again and checks that the sidebar
shows the cells as restored; then edits a cell in the editor and checks
that it and its dependents show as stale (in the rows, the badges and the
graph), and that 'Run stale cells' runs exactly those.  Screenshots of the
sidebar go to test-artifacts/.

Skipped when /usr/bin/chromium is missing, except in CI (``CI`` set), where
that is a failure: .ci/run installs it.
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
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

# a JupyterLab server in chromium, running the notebook's kernels
pytestmark = [pytest.mark.browser, pytest.mark.kernel]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TIMEOUT_MS = 60_000

# A chain base -> scaled -> total -> report, and other, which reads only base.
CELLS = {
    "load": "%load_ext incrcell",
    "base": "import time\nbase = 10",
    "scaled": "time.sleep(1)\nscaled = base * 2",
    "total": "total = scaled + 1\nprint(total)",
    "other": "other = base - 1\nprint(other)",
    "report": 'report = f"{total} {other}"\nreport',
}
EDITED, DEPENDENTS, UNAFFECTED = "scaled", {"total", "report"}, {"base", "other"}


def _require_browser() -> None:
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


@pytest.fixture
def lab(tmp_path: Path, cache_env: dict[str, str]) -> Iterator[str]:
    """A running JupyterLab serving chain.ipynb; yields its base URL with the token query."""
    _require_browser()
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, id=cell_id) for cell_id, source in CELLS.items()]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "chain.ipynb")
    plain = nbformat.v4.new_notebook()
    plain.cells = [nbformat.v4.new_code_cell("x = 1", id="plain")]
    plain.metadata["kernelspec"] = nb.metadata["kernelspec"]
    nbformat.write(plain, root / "plain.ipynb")

    settings = tmp_path / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {
        **os.environ,
        **cache_env,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
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
    log_path = tmp_path / "jupyter-lab.log"
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
        yield f"{url}/lab/tree/chain.ipynb?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(log_path.read_text()[-5000:])  # shown if the test failed


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
OPEN_PLAIN = """async () => {
  const plain = await window.jupyterapp.commands.execute('docmanager:open', {path: 'plain.ipynb'});
  window.jupyterapp.shell.activateById(plain.id);
}"""
RESTART = """async () => {
  await window.__nb.sessionContext.restartKernel();
  await window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs');
}"""


def _screenshot_sidebar(page, path: Path) -> None:
    """The sidebar down to the end of what it shows (not the empty space below)."""
    box = page.locator("#incrcell-sidebar").bounding_box()
    bottom = page.evaluate("""() => {
      const shown = document.querySelectorAll(
        '#incrcell-sidebar .jp-incrcell-rows:not([hidden]), #incrcell-sidebar .jp-incrcell-graph:not([hidden])');
      return Math.max(...[...shown].map(node => node.getBoundingClientRect().bottom));
    }""")
    height = min(bottom + 8, box["y"] + box["height"]) - box["y"]
    page.screenshot(path=str(path), clip={**box, "height": height})


def test_sidebar_restores_then_shows_stale(lab: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            crashes: list[str] = []
            page.on("pageerror", lambda error: crashes.append(str(error)))
            page.goto(lab)
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
            page.evaluate("() => window.jupyterapp.commands.execute('incrcell:show-sidebar')")
            sidebar = page.locator("#incrcell-sidebar")
            # A fresh kernel has not loaded incrcell: the panel says how to enable it.
            page.wait_for_selector(
                "#incrcell-sidebar .jp-incrcell-banner:has-text('%load_ext incrcell')"
            )

            # 1. First run: everything runs (and is recorded).
            page.evaluate(RUN_ALL)
            page.wait_for_function(
                HAS_STATES, arg={cell: "ran" for cell in CELLS if cell != "load"}
            )

            # 2. Restart: the kernel forgets incrcell, and so does the panel.
            page.evaluate(RESTART)
            page.wait_for_selector("#incrcell-sidebar .jp-incrcell-banner:has-text('not enabled')")
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)

            # 3. Run all again: every cell after %load_ext is restored from the cache.
            page.evaluate(RUN_ALL)
            restored = {cell: "restored" for cell in CELLS if cell != "load"}
            page.wait_for_function(HAS_STATES, arg=restored)
            assert page.locator(".jp-CodeCell[data-incrcell-state='restored']").count() == len(
                restored
            )
            assert "5 restored" in sidebar.locator(".jp-incrcell-totals").inner_text()

            # 4. Edit a cell in its editor: it and its dependents become stale, the rest stays.
            cell = page.locator(".jp-Notebook .jp-CodeCell").nth(list(CELLS).index(EDITED))
            cell.locator(".cm-line", has_text="scaled = base * 2").click()
            page.keyboard.press("End")
            page.keyboard.press("Backspace")
            page.keyboard.type("3")
            expected = {
                EDITED: "stale",
                **dict.fromkeys(DEPENDENTS, "stale"),
                **dict.fromkeys(UNAFFECTED, "restored"),
            }
            page.wait_for_function(HAS_STATES, arg=expected)
            assert page.locator(".jp-CodeCell[data-incrcell-state='stale']").count() == 3
            run_stale = sidebar.locator(".jp-incrcell-run-stale")
            assert run_stale.inner_text() == "Run stale cells (3)"
            _screenshot_sidebar(page, ARTIFACTS / "sidebar.png")

            # 5. The graph: hovering the edited cell highlights what the edit invalidates.
            sidebar.locator(".jp-incrcell-tab[data-tab='graph']").click()
            sidebar.locator(f".jp-incrcell-node[data-cell-id='{EDITED}'] circle").hover()
            affected = sidebar.locator(".jp-incrcell-node.jp-incrcell-mod-affected")
            assert {
                affected.nth(i).get_attribute("data-cell-id") for i in range(affected.count())
            } == DEPENDENTS
            _screenshot_sidebar(page, ARTIFACTS / "sidebar-graph.png")
            sidebar.locator(".jp-incrcell-tab[data-tab='cells']").click()

            # 6. Run stale cells: exactly the stale ones run, the others stay restored.
            run_stale.click()
            after_run = {
                **dict.fromkeys((EDITED, *DEPENDENTS), "ran"),
                **dict.fromkeys(UNAFFECTED, "restored"),
            }
            page.wait_for_function(HAS_STATES, arg=after_run)
            assert run_stale.inner_text() == "Run stale cells (0)"
            outputs = page.locator(".jp-Notebook .jp-CodeCell").nth(list(CELLS).index("total"))
            assert "31" in outputs.locator(".jp-OutputArea").inner_text()
            page.screenshot(path=str(ARTIFACTS / "lab.png"))
            # Clicking a row goes to its cell.
            sidebar.locator(".jp-incrcell-row[data-cell-id='load']").click()
            page.wait_for_function("() => window.__nb.content.activeCell?.model.id === 'load'")

            # 7. The panel follows the active notebook: one without incrcell, then back.
            page.evaluate(OPEN_PLAIN)
            page.wait_for_function(HAS_STATES, arg={"plain": "not_run"})
            page.wait_for_selector("#incrcell-sidebar .jp-incrcell-banner:has-text('not enabled')")
            page.evaluate("() => window.jupyterapp.shell.activateById(window.__nb.id)")
            page.wait_for_function(HAS_STATES, arg={"base": "restored", "total": "ran"})
            assert sidebar.locator(".jp-incrcell-row").count() == len(CELLS)

            # 8. A new page on the same kernel (the edit saved, so the sources match what ran):
            # the frontend's own comm finds incrcell loaded.
            page.evaluate("() => window.__nb.context.save()")
            page.reload()
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
            page.evaluate("() => window.jupyterapp.commands.execute('incrcell:show-sidebar')")
            page.wait_for_function(HAS_STATES, arg=after_run)
            assert sidebar.locator(".jp-incrcell-banner").is_hidden()
            assert not crashes, crashes
        except Exception:
            # What the page showed, for the failure report.
            print("sidebar:", page.locator("#incrcell-sidebar").inner_text(timeout=5_000))
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
    assert time.monotonic() - started < 120
