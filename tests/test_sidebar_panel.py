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

Screenshots go to test-artifacts/ (panel-*.png).  The server and the page:
tests/browser.py (this checkout's build of the extension when there is one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import (
    ARTIFACTS,
    HAS_STATES,
    KERNEL_CONNECTED,
    RESTART,
    ROW_STATES,
    RUN_ALL,
    TIMEOUT_MS,
    Server,
    chromium_page,
    jupyter_server,
    open_lab,
    screenshot_sidebar,
)

pytestmark = [pytest.mark.browser, pytest.mark.kernel]

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
def lab(tmp_path: Path, cache_env: dict[str, str]) -> Iterator[Server]:
    """A JupyterLab serving panel.ipynb and the data.csv it reads."""
    with jupyter_server(tmp_path, {"panel": CELLS.items()}, cache_env) as server:
        (server.root / "data.csv").write_text("1 2 3\n")
        yield server


def test_forecast_own_cells_labels_and_files_changed_on_disk(lab: Server) -> None:
    root = lab.root
    user_cells = [cell for cell in CELLS if cell not in ("load", "status")]
    viewport = {"width": 1400, "height": 1000}
    with chromium_page("panel-failure.png", viewport=viewport) as (page, crashes):
        open_lab(page, lab, "panel.ipynb")
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
        forecast.locator(f"text=Run All will restore {len(user_cells)} cells and run 0").wait_for()
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
        screenshot_sidebar(page, ARTIFACTS / "panel-forecast.png")

        # 2. Run All does what the forecast said.
        page.evaluate(RUN_ALL)
        page.wait_for_function(HAS_STATES, arg=dict.fromkeys(user_cells, "restored"))
        assert "uncacheable" not in sidebar.locator(".jp-incrcell-totals").inner_text()
        screenshot_sidebar(page, ARTIFACTS / "panel-restored.png")

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
        screenshot_sidebar(page, ARTIFACTS / "panel-stale.png")

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
