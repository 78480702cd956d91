"""End to end: the sidebar in a real JupyterLab, driven by a real headless Chromium.

A ``jupyter lab`` server on 127.0.0.1 (random port and token, its own config,
data, settings, workspaces and cache directories) serves a small notebook
with a dependency chain; Debian's chromium, driven by Playwright, opens it,
runs all, restarts the kernel, runs all again and checks that the sidebar
shows the cells as restored; then edits a cell in the editor and checks
that it and its dependents show as stale (in the rows, the badges and the
graph), and that 'Run stale cells' runs exactly those.  Screenshots of the
sidebar go to test-artifacts/.  The server and the page: tests/browser.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import (
    ARTIFACTS,
    HAS_STATES,
    KERNEL_CONNECTED,
    RESTART,
    RUN_ALL,
    TIMEOUT_MS,
    Server,
    chromium_page,
    jupyter_server,
    open_lab,
    screenshot_sidebar,
)

# a JupyterLab server in chromium, running the notebook's kernels
pytestmark = [pytest.mark.browser, pytest.mark.kernel]

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


@pytest.fixture
def lab(tmp_path: Path, cache_env: dict[str, str]) -> Iterator[Server]:
    """A running JupyterLab serving chain.ipynb and plain.ipynb."""
    notebooks = {"chain": CELLS.items(), "plain": [("plain", "x = 1")]}
    with jupyter_server(tmp_path, notebooks, cache_env) as server:
        yield server


OPEN_PLAIN = """async () => {
  const plain = await window.jupyterapp.commands.execute('docmanager:open', {path: 'plain.ipynb'});
  window.jupyterapp.shell.activateById(plain.id);
}"""


def test_sidebar_restores_then_shows_stale(lab: Server) -> None:
    started = time.monotonic()
    with chromium_page("failure.png", viewport={"width": 1400, "height": 900}) as (page, crashes):
        open_lab(page, lab, "chain.ipynb")
        sidebar = page.locator("#incrcell-sidebar")
        # A fresh kernel has not loaded incrcell: the panel says how to enable it.
        page.wait_for_selector(
            "#incrcell-sidebar .jp-incrcell-banner:has-text('%load_ext incrcell')"
        )

        # 1. First run: everything runs (and is recorded).
        page.evaluate(RUN_ALL)
        page.wait_for_function(HAS_STATES, arg={cell: "ran" for cell in CELLS if cell != "load"})

        # 2. Restart: the kernel forgets incrcell, and so does the panel.
        page.evaluate(RESTART)
        page.wait_for_selector("#incrcell-sidebar .jp-incrcell-banner:has-text('not enabled')")
        page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)

        # 3. Run all again: every cell after %load_ext is restored from the cache.
        page.evaluate(RUN_ALL)
        restored = {cell: "restored" for cell in CELLS if cell != "load"}
        page.wait_for_function(HAS_STATES, arg=restored)
        assert page.locator(".jp-CodeCell[data-incrcell-state='restored']").count() == len(restored)
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
        screenshot_sidebar(page, ARTIFACTS / "sidebar.png")

        # 5. The graph: hovering the edited cell highlights what the edit invalidates.
        sidebar.locator(".jp-incrcell-tab[data-tab='graph']").click()
        sidebar.locator(f".jp-incrcell-node[data-cell-id='{EDITED}'] circle").hover()
        affected = sidebar.locator(".jp-incrcell-node.jp-incrcell-mod-affected")
        assert {
            affected.nth(i).get_attribute("data-cell-id") for i in range(affected.count())
        } == DEPENDENTS
        screenshot_sidebar(page, ARTIFACTS / "sidebar-graph.png")
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
    assert time.monotonic() - started < 120
