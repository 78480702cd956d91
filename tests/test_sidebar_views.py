"""The sidebar's Variables and Cache views, and the panel in Notebook 7 and a dark theme.

- in-process: what ``incrcell/sidebar_views.py`` says about a namespace's values;
- a real kernel: the ``request_variables``, ``request_cache`` and ``evict``
  messages of labextension/PROTOCOL.md ("Views"), with the values a plain run
  gives after an evicted cell runs again;
- browsers (one server and one page per app): the Graph, Variables and Cache
  tabs of a 40-cell notebook in JupyterLab (with JupyterLab Dark, whose text
  contrast is computed in the page), and Notebook 7 (the toolbar icon opens
  the panel; badges and an action work there too).  The README's screenshots
  are taken here, at a 2x device scale factor (``INCRCELL_SCREENSHOTS=docs``
  writes them to docs/, else to test-artifacts/).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import (
    ARTIFACTS,
    HAS_STATES,
    KERNEL_CONNECTED,
    PANEL_PARTS,
    ROW_STATES,
    RUN_ALL,
    SET_SOURCE,
    TIMEOUT_MS,
    Server,
    chromium_page,
    jupyter_server,
    open_lab,
    screenshot_sidebar,
)

from incrcell.sidebar_views import is_key, variables

from kernel import LOAD, Kernel

# -- in-process: what a variable is said to be -------------------------------------------


class _Broken:
    def __sizeof__(self) -> int:
        raise RuntimeError("no size for you")

    def __len__(self) -> int:
        raise RuntimeError("no length either")


def test_variables_describe_values_and_never_break_on_them() -> None:
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    namespace: dict[str, Any] = {
        "arr": np.zeros((3, 4)),
        "df": pd.DataFrame({"a": [1, 2, 3], "b": [1.0, 2.0, 3.0]}),
        "items": [1, 2, 3],
        "name": "hello",
        "broken": _Broken(),
        "np": np,  # a module: not a variable
        "_private": 1,
        "hidden": 2,  # IPython's own (user_ns_hidden)
    }
    found = {v["name"]: v for v in variables(namespace, {"hidden"})}
    assert list(found) == ["arr", "broken", "df", "items", "name"]
    assert found["arr"] == {"name": "arr", "type": "ndarray", "summary": "3 x 4", "size": 96}
    assert found["df"]["type"] == "DataFrame" and found["df"]["summary"] == "3 x 2"
    assert found["df"]["size"] == int(namespace["df"].memory_usage(deep=False).sum())
    assert found["items"]["summary"] == "3 items"
    assert found["items"]["size"] == sys.getsizeof(namespace["items"])
    assert found["name"]["summary"] == "5 characters"
    assert found["broken"] == {"name": "broken", "type": "_Broken", "summary": "", "size": None}


def test_only_cache_keys_can_be_evicted() -> None:
    assert is_key("0123456789abcdef0123456789abcdef")
    assert not is_key("../../etc/passwd") and not is_key("ABCDEF0123") and not is_key("")


# -- a real kernel: the views' messages ----------------------------------------------------

CELLS = [
    LOAD,
    ("data", "import numpy as np\ndata = np.arange(1000.0)"),
    ("scale", "scale = 2"),
    ("feat", "feat = data * scale"),
    ("total", "total = float(feat.sum())\ntotal"),
]


class Sidebar:
    """One frontend on one ``incrcell`` comm (as tests/test_comm.py's, for these messages)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.comm_id = kernel.comm_open("incrcell")

    def request(self, answer: str, **data: Any) -> dict[str, Any]:
        msg_id = self.kernel.comm_send(self.comm_id, {"protocol": 1, **data})
        msg = self.kernel.comm_wait(
            lambda m: (
                m["msg_type"] == "comm_msg"
                and m["content"]["comm_id"] == self.comm_id
                and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["data"].get("type") in (answer, "error")
            )
        )
        return msg["content"]["data"]


def test_variables_cache_and_evict_in_a_kernel(kernel: Kernel) -> None:
    kernel.run_all(CELLS)
    sidebar = Sidebar(kernel)
    state = sidebar.request("state", type="cells", cells=[{"id": i, "source": s} for i, s in CELLS])
    assert {c["id"]: c["prediction"] for c in state["cells"]}["feat"] == "restore"

    answer = sidebar.request("variables", type="request_variables")
    assert answer["busy"] is False
    found = {v["name"]: v for v in answer["variables"]}
    assert set(found) == {"data", "scale", "feat", "total"}  # not np (a module), not IPython's
    assert found["data"] == {"name": "data", "type": "ndarray", "summary": "1000", "size": 8000}
    assert found["total"]["type"] == "float"

    answer = sidebar.request("cache", type="request_cache")
    assert answer["busy"] is False
    entries = {cell: e for e in answer["entries"] for cell in e["cells"]}
    assert set(entries) == {"data", "scale", "feat", "total"}  # the %load_ext cell has none
    assert entries["data"]["bytes"] > 8000  # the entry and its array
    assert entries["feat"]["origin"] == "local" and entries["feat"]["in_remote"] is False
    assert entries["feat"]["used"] >= entries["feat"]["created"] > 0

    # evict one: a state says it will run; the kernel runs it and the value is a plain run's
    state = sidebar.request("state", type="evict", key=entries["feat"]["key"])
    feat = {c["id"]: c for c in state["cells"]}["feat"]
    assert (feat["prediction"], feat["prediction_code"]) == ("run", "ENTRY_MISSING")
    answer = sidebar.request("cache", type="request_cache")
    assert {cell for e in answer["entries"] for cell in e["cells"]} == {"data", "scale", "total"}
    assert sidebar.request("error", type="evict", key="../x")["message"] == (
        "`key` must be a cache key (lowercase hex)"
    )

    kernel.restart()
    executions = kernel.run_all(CELLS)
    restored = {cell: e.restored for (cell, _), e in zip(CELLS, executions)}
    assert restored == {"load": False, "data": True, "scale": True, "feat": False, "total": True}
    assert kernel.value("total") == repr(float(sum(range(1000)) * 2))


# -- browsers: one server, one page, JupyterLab then Notebook 7 ----------------------------


def _forty_cells() -> list[tuple[str, str]]:
    """A 40-cell notebook: a loader, fan-outs, chains, merges, a nocache cell, a report."""
    cells = [
        LOAD,
        ("data", "import numpy as np\ndata = np.arange(10_000.0)"),
        ("scale", "# the factor\nscale = 2.0"),
    ]
    cells += [(f"f{i}", f"f{i} = data * {i} + scale") for i in range(1, 13)]
    cells += [(f"g{i}", f"g{i} = float(f{i}.mean())") for i in range(1, 13)]
    cells += [(f"h{i}", f"h{i} = g{2 * i - 1} + g{2 * i}") for i in range(1, 7)]
    cells += [
        ("summary", "%%incrcell nocache\nsummary = h1 + h2 + h3"),
        ("report", "report = dict(zip('abc', [h4, h5, h6]))\nreport"),
        ("table", "table = [[f1[i], f2[i]] for i in range(5)]"),
        ("text", "text = 'incrcell'"),
        ("count", "count = len(text) + len(table)"),
        ("model", "weights = np.linspace(0, 1, 16)\nmodel = weights * scale"),
        ("score", "score = float(model.sum() + count + summary)"),
    ]
    assert len(cells) == 40
    return cells


FORTY = _forty_cells()
# An edit of f3 makes stale what reads it, through every executed cell: the nocache one too.
EDITED, STALE_AFTER_EDIT = "f3", {"g3", "h2", "summary", "score"}
CHAIN = [
    LOAD,
    ("base", "base = 10"),
    ("scaled", "scaled = base * 2"),
    ("total", "total = scaled + 1"),
]
SCREENSHOTS = Path(os.environ.get("INCRCELL_SCREENSHOTS") or ARTIFACTS)

# Every piece of visible text in the given parts of the panel, with its contrast ratio against
# what is behind it (WCAG 2: relative luminance; colours blended through transparency and
# opacity; SVG text by its fill); disabled controls are exempt, as in WCAG.
CONTRAST = """selectors => {
  const parse = c => {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const blend = (fg, bg) => [0, 1, 2].map(i => fg[i] * fg[3] + bg[i] * (1 - fg[3]));
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255];
    for (const layer of layers.reverse()) bg = blend(layer, bg);
    return bg;
  };
  const lum = rgb => {
    const [r, g, b] = rgb.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const found = [];
  for (const root of document.querySelectorAll(selectors)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      if (!el.getClientRects().length || el.closest(':disabled') || el.closest('title')) continue;
      if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
      const style = getComputedStyle(el);
      const fg = parse(el instanceof SVGElement ? style.fill : style.color);
      if (!fg) continue;
      for (let e = el; e; e = e.parentElement) fg[3] *= Number(getComputedStyle(e).opacity);
      const bg = background(el);
      found.push({ text: el.textContent.trim().slice(0, 40), ratio: ratio(blend(fg, bg), bg) });
    }
  }
  return found;
}"""
SIDEBAR_WIDTH = """width => {
  // as a user dragging the panel's edge: the right area's share of the main split panel
  const panel = document.querySelector('#jp-main-split-panel');
  const split = window.jupyterapp.shell._hsplitPanel;
  if (panel && split) {
    const total = panel.getBoundingClientRect().width;
    const sizes = split.relativeSizes();
    const right = width / total;
    split.setRelativeSizes([sizes[0], 1 - sizes[0] - right, right]);
  }
}"""


@pytest.fixture
def server(tmp_path: Path, cache_env: dict[str, str]) -> Iterator[Server]:
    """A Jupyter server with JupyterLab and Notebook 7 serving forty.ipynb and chain.ipynb."""
    with jupyter_server(tmp_path, {"forty": FORTY, "chain": CHAIN}, cache_env) as running:
        yield running


def _shot(page: Any, name: str) -> None:
    """The sidebar down to the end of what it shows, at the page's 2x scale."""
    screenshot_sidebar(page, SCREENSHOTS / name)


def _low_contrast(page: Any) -> list[dict[str, Any]]:
    found = page.evaluate(CONTRAST, PANEL_PARTS)
    assert found, "no text found to check"
    return [item for item in found if item["ratio"] < 4.5]


@pytest.mark.browser
@pytest.mark.kernel
def test_views_in_jupyterlab_and_notebook7(server: Server) -> None:
    options = {"viewport": {"width": 1280, "height": 1000}, "device_scale_factor": 2}
    with chromium_page("views-failure.png", **options) as (page, crashes):
        _jupyterlab(page, server)
        assert not crashes, crashes
        _notebook7(page, server.page("notebooks/chain.ipynb"))
        # Notebook 7 itself logs errors of its own plugins (filebrowser:open-path...)
        assert not [crash for crash in crashes if "incrcell" in crash], crashes


def _jupyterlab(page: Any, server: Server) -> None:
    open_lab(page, server, "forty.ipynb")
    sidebar = page.locator("#incrcell-sidebar")
    assert sidebar.locator(".jp-incrcell-tab[data-tab='variables']").count() == 1, (
        "this checkout's build of the extension did not load"
    )
    page.evaluate(SIDEBAR_WIDTH, 420)
    page.evaluate(RUN_ALL)
    ran = {cell: "ran" for cell, _ in FORTY[1:]} | {"summary": "uncacheable"}
    page.wait_for_function(HAS_STATES, arg=ran)
    page.evaluate(RUN_ALL)  # again: the unchanged cells are restored (data imports: it runs)
    restored = {cell: "restored" for cell, _ in FORTY[2:]} | {"summary": "uncacheable"}
    page.wait_for_function(HAS_STATES, arg=restored)

    # The graph: 40 nodes in layers; clicking f3 focuses it (and goes to the cell).
    sidebar.locator(".jp-incrcell-tab[data-tab='graph']").click()
    nodes = sidebar.locator(".jp-incrcell-node")
    nodes.nth(39).wait_for()
    assert nodes.count() == 40
    layers = page.evaluate(
        """() => new Set([...document.querySelectorAll('#incrcell-sidebar .jp-incrcell-node')]
             .map(n => n.dataset.layer)).size"""
    )
    assert layers >= 4
    sidebar.locator(f".jp-incrcell-node[data-cell-id='{EDITED}'] circle").click()
    page.wait_for_function(f"() => window.__nb.content.activeCell?.model.id === '{EDITED}'")
    page.mouse.move(0, 0)  # the focus is the selection, not the pointer

    def marked(selector: str) -> set[str]:
        return set(
            page.evaluate(
                """selector => [...document.querySelectorAll(selector)]
                     .map(n => n.dataset.cellId)""",
                selector,
            )
        )

    graph_stale = marked("#incrcell-sidebar .jp-incrcell-node.jp-incrcell-mod-affected")
    assert graph_stale == STALE_AFTER_EDIT
    related = marked("#incrcell-sidebar .jp-incrcell-node.jp-incrcell-mod-related")
    assert related == {"data", "scale"} | STALE_AFTER_EDIT
    labels = page.evaluate(
        """() => [...document.querySelectorAll('#incrcell-sidebar .jp-incrcell-arc-label')]
             .filter(l => getComputedStyle(l).display !== 'none')
             .map(l => { const r = l.getBoundingClientRect();
                         return [r.left, r.top, r.right, r.bottom, l.textContent]; })"""
    )
    assert labels, "the focused cell's edges show their names"
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, f"edge labels overlap: {a} {b}"
    _shot(page, "views-graph.png")

    # The Cells tab marks the same cells (one rule), and the kernel agrees once f3 is edited.
    sidebar.locator(".jp-incrcell-tab[data-tab='cells']").click()
    assert marked("#incrcell-sidebar .jp-incrcell-row.jp-incrcell-mod-affected") == graph_stale
    source = dict(FORTY)[EDITED]
    page.evaluate(SET_SOURCE, [EDITED, source.replace("scale", "scale * 2")])
    stale = dict.fromkeys({EDITED} | STALE_AFTER_EDIT, "stale")
    page.wait_for_function(HAS_STATES, arg={**stale, "f4": "restored", "report": "restored"})
    kernel_stale = {cell for cell, state in page.evaluate(ROW_STATES).items() if state == "stale"}
    assert kernel_stale == {EDITED} | STALE_AFTER_EDIT
    _shot(page, "views-cells.png")
    page.evaluate(SET_SOURCE, [EDITED, source])
    page.wait_for_function(HAS_STATES, arg=restored)

    # Variables: type, shape, size, where defined, who uses it.
    sidebar.locator(".jp-incrcell-tab[data-tab='variables']").click()
    data_row = sidebar.locator(".jp-incrcell-variables tr[data-name='data']")
    data_row.wait_for()
    cells = data_row.locator("td")
    assert cells.nth(1).inner_text() == "ndarray (10000)"
    assert cells.nth(2).inner_text() == "78.1 KiB"
    assert cells.nth(3).locator("[data-cell-id='data']").count() == 1
    assert cells.nth(4).locator("[data-cell-id]").count() == 12  # f1..f12
    assert sidebar.locator(".jp-incrcell-variables tr[data-name='np']").count() == 0
    _shot(page, "views-variables.png")

    # Cache: this notebook's entries (not the %load_ext or nocache cells'), evict one.
    sidebar.locator(".jp-incrcell-tab[data-tab='cache']").click()
    entries = sidebar.locator(".jp-incrcell-cache-entry")
    entries.nth(37).wait_for()
    assert entries.count() == 38
    summary = sidebar.locator(".jp-incrcell-cache-summary").inner_text()
    assert "This notebook: 38 entries" in summary and "Whole cache:" in summary
    _shot(page, "views-cache.png")
    report = entries.filter(has=page.locator("[data-cell-id='report']"))
    report.locator(".jp-incrcell-evict").click()
    page.wait_for_function(
        "() => document.querySelectorAll('#incrcell-sidebar .jp-incrcell-cache-entry').length === 37"
    )
    assert entries.filter(has=page.locator("[data-cell-id='report']")).count() == 0

    # JupyterLab Dark: every text of the rows, the graph and the views at 4.5:1 or more.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'")
    for tab in ("cells", "graph", "variables", "cache"):
        sidebar.locator(f".jp-incrcell-tab[data-tab='{tab}']").click()
        low = _low_contrast(page)
        assert low == [], f"{tab} in JupyterLab Dark: {low}"
        if tab == "graph":
            _shot(page, "views-graph-dark.png")
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})"
    )
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'")
    for tab in ("cells", "graph"):
        sidebar.locator(f".jp-incrcell-tab[data-tab='{tab}']").click()
        low = _low_contrast(page)
        assert low == [], f"{tab} in JupyterLab Light: {low}"


def _notebook7(page: Any, url: str) -> None:
    """Notebook 7: the toolbar icon opens the panel; states, badges and an action work."""
    page.goto(url)
    page.wait_for_function(KERNEL_CONNECTED, timeout=TIMEOUT_MS)
    sidebar = page.locator("#incrcell-sidebar")
    button = page.locator(".jp-NotebookPanel-toolbar .jp-incrcell-toolbar-button")
    button.wait_for()
    assert not sidebar.is_visible()
    button.click()
    sidebar.wait_for(state="visible")
    page.evaluate(RUN_ALL)
    chain = {cell: "ran" for cell, _ in CHAIN[1:]}
    page.wait_for_function(HAS_STATES, arg=chain)
    assert page.locator(".jp-CodeCell[data-incrcell-state='ran']").count() == 3
    page.evaluate(SET_SOURCE, ["scaled", "scaled = base * 3"])
    page.wait_for_function(HAS_STATES, arg={"base": "ran", "scaled": "stale", "total": "stale"})
    assert page.locator(".jp-CodeCell[data-incrcell-state='stale']").count() == 2
    sidebar.locator(".jp-incrcell-run-stale").click()
    page.wait_for_function(HAS_STATES, arg=chain)
    assert page.evaluate("() => window.__nb.sessionContext.session.kernel.id")
    low = _low_contrast(page)
    assert low == [], f"Notebook 7: {low}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "views-notebook7.png"))  # the toolbar icon too
    button.click()
    sidebar.wait_for(state="hidden")
