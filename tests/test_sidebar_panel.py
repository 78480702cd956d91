"""The panel for real use, in a real JupyterLab and headless Chromium (issue 15, items 2-4).

One lab server, one page, a 40-cell notebook whose first cell loads incrcell and
imports (as the quickstart does), whose cells start with comments, and whose
second cell reads ``data.csv``:

- after a restart and the ``%load_ext`` cell, the forecast at the top says what
  Run All will do, and Run All then does exactly that (every cell restored);
- incrcell's own cells are quiet: no warning, no badge, not counted; rows are
  labelled by their first line of code and show their time without hovering;
- ``data.csv`` edited on disk: with no cell run, its reader and the dependents
  turn stale ("changed on disk"), their old outputs dimmed and the restored
  note replaced; "run this and its dependents" reruns exactly those.

Screenshots go to test-artifacts/ (panel-*.png).  The extension under test is
this checkout's build (``incrcell/labextension``), put first on JUPYTER_PATH.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from test_sidebar_e2e import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    HAS_STATES,
    KERNEL_CONNECTED,
    RESTART,
    ROW_STATES,
    RUN_ALL,
    TIMEOUT_MS,
    _free_port,
    _require_browser,
    _screenshot_sidebar,
)

pytestmark = [pytest.mark.browser, pytest.mark.kernel]

BUILD = Path(__file__).resolve().parent.parent / "incrcell" / "labextension"

LOAD = "%load_ext incrcell\nimport json"
CELLS = {
    "load": LOAD,
    "data": "# read the data\nrows = open('data.csv').read().split()",
    "count": "# slow\nn = len(rows)\nprint(n)",
    **{
        f"v{i}": f"# slow\nvalue_{i} = n + {i}  # {'a long comment ' * (i % 3)}\nprint(value_{i})"
        for i in range(3, 38)
    },
    "total": "# slow\ntotal = sum([" + ", ".join(f"value_{i}" for i in range(3, 38)) + "])",
    "status": "%incrcell status",
}
READER_CHAIN = {"data", "count", *(f"v{i}" for i in range(3, 38)), "total"}
RUN_FIRST_CELL = """async () => {
  window.__nb.content.activeCellIndex = 0;
  await window.jupyterapp.commands.execute('notebook:run-cell');
}"""


@pytest.fixture
def lab(tmp_path: Path, cache_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """A JupyterLab serving panel.ipynb with this checkout's panel; (URL, notebook dir)."""
    _require_browser()
    if not (BUILD / "package.json").exists():
        pytest.skip(f"the extension is not built here ({BUILD}): cd labextension && npm run build")
    root = tmp_path / "notebooks"
    root.mkdir()
    (root / "data.csv").write_text("1 2 3\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, id=cell_id) for cell_id, source in CELLS.items()]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "panel.ipynb")
    settings = tmp_path / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    shared = tmp_path / "jupyter-path"
    (shared / "labextensions").mkdir(parents=True)
    (shared / "labextensions" / "incrcell").symlink_to(BUILD)
    env = {
        **os.environ,
        **cache_env,
        "JUPYTER_PATH": str(shared),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "PYTHONPATH": str(BUILD.parent.parent),
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
        *(["--allow-root"] if os.geteuid() == 0 else []),
    ]
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
        yield f"{url}/lab/tree/panel.ipynb?token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        print(log_path.read_text()[-3000:])


def test_forecast_own_cells_labels_and_files_changed_on_disk(lab: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, root = lab
    ARTIFACTS.mkdir(exist_ok=True)
    user_cells = [cell for cell in CELLS if cell not in ("load", "status")]
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        crashes: list[str] = []
        page.on("pageerror", lambda error: crashes.append(str(error)))
        try:
            page.goto(url)
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
            page.evaluate("() => window.jupyterapp.commands.execute('incrcell:show-sidebar')")
            sidebar = page.locator("#incrcell-sidebar")
            sidebar.locator(".jp-incrcell-forecast").wait_for(state="attached")  # this build

            # 1. First run, restart, then only the %load_ext cell: the forecast says what
            # Run All will do (the imports in the %load_ext cell do not make readers run).
            page.evaluate(RUN_ALL)
            page.wait_for_function(HAS_STATES, arg=dict.fromkeys(user_cells, "ran"))
            page.evaluate(RESTART)
            page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
            page.evaluate(RUN_FIRST_CELL)
            forecast = sidebar.locator(".jp-incrcell-forecast")
            forecast.locator(
                f"text=Run All will restore {len(user_cells)} cells and run 0"
            ).wait_for()
            # incrcell's own cells: quiet, no badge, not counted as uncacheable
            own = sidebar.locator(".jp-incrcell-row.jp-incrcell-mod-own")
            assert {own.nth(i).get_attribute("data-cell-id") for i in range(own.count())} == {
                "load",
                "status",
            }
            assert "uncacheable" not in sidebar.locator(".jp-incrcell-totals").inner_text()
            assert page.locator(".jp-CodeCell[data-incrcell-state='uncacheable']").count() == 0
            # labelled by the first line of code, time visible without hovering
            row = sidebar.locator(".jp-incrcell-row[data-cell-id='count']")
            assert row.locator(".jp-incrcell-label").inner_text() == "n = len(rows)"
            assert row.locator(".jp-incrcell-time").inner_text().startswith("saves ")
            _screenshot_sidebar(page, ARTIFACTS / "panel-forecast.png")

            # 2. Run All does what the forecast said.
            page.evaluate(RUN_ALL)
            page.wait_for_function(HAS_STATES, arg=dict.fromkeys(user_cells, "restored"))
            assert "uncacheable" not in sidebar.locator(".jp-incrcell-totals").inner_text()
            _screenshot_sidebar(page, ARTIFACTS / "panel-restored.png")

            # 3. data.csv edited on disk, no cell run: its reader and every dependent stale.
            (root / "data.csv").write_text("1 2 3 4\n")
            page.wait_for_function(HAS_STATES, arg=dict.fromkeys(READER_CHAIN, "stale"))
            summary = sidebar.locator(".jp-incrcell-row[data-cell-id='data'] .jp-incrcell-summary")
            assert summary.inner_text() == "stale: file `data.csv` changed on disk"
            stale_cell = page.locator(".jp-Notebook .jp-CodeCell").nth(2)  # count: printed
            opacity = stale_cell.locator(".jp-OutputArea-child").first.evaluate(
                "node => getComputedStyle(node).opacity"
            )
            assert float(opacity) < 1
            assert stale_cell.locator(".incrcell-restored").is_hidden()
            page.screenshot(path=str(ARTIFACTS / "panel-stale-notebook.png"))
            _screenshot_sidebar(page, ARTIFACTS / "panel-stale.png")

            # 4. Run the reader and its dependents from its row: exactly those run, for real.
            sidebar.locator(".jp-incrcell-row[data-cell-id='data']").hover()
            sidebar.locator(".jp-incrcell-row[data-cell-id='data'] .jp-incrcell-run-deps").click()
            page.wait_for_function(HAS_STATES, arg=dict.fromkeys(READER_CHAIN, "ran"))
            states = page.evaluate(ROW_STATES)
            assert states["load"] == "uncacheable" and states["status"] == "uncacheable"
            printed = page.evaluate(
                "() => JSON.stringify(window.__nb.content.widgets[2].model.outputs.toJSON())"
            )
            assert "4\\n" in printed and "restored by incrcell" not in printed
            assert not crashes, crashes
        except Exception:
            print("sidebar:", page.locator("#incrcell-sidebar").inner_text(timeout=5_000))
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"))
            raise
        finally:
            browser.close()
