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

One lab server and one page for the whole file.  The server (tests/browser.py)
loads the sidebar built in this checkout (``incrcell/labextension``) when there
is one, else the installed one; the page is checked to run that build.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from browser import (
    HAS_STATES,
    SET_SOURCE,
    Server,
    chromium_page,
    jupyter_server,
    open_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.kernel]

#: How long a message may take to reach the kernel, retries included (the panel retries
#: what the kernel has not acknowledged after a few idle seconds).
REACH_S = 20
#: Restart, kernel change or reload, then the checks; the loss this guards against showed
#: in most restarts with tiny cells, so a handful of rounds catches it.
ROUNDS = ["restart-run-all"] * 3 + ["change-kernel", "reload"]

CELLS = {"load": "%load_ext incrcell", "a": "a = 1", "b": "b = a + 1", "c": "c = b * 2\nc"}
TINY = [cell for cell in CELLS if cell != "load"]

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
# Clear cache's toast closes after 5 s; one of an earlier round may still be there, or
# closing (its text no longer rendered): the new one is told apart by waiting for those to go.
NO_REMOVED_TOAST = """() => ![...document.querySelectorAll('.Toastify__toast')]
  .some(t => t.textContent.includes('removed'))"""
REMOVED_TOAST = """() => [...document.querySelectorAll('.Toastify__toast')]
  .some(t => /removed [1-9]\\d* cache entr/.test(t.innerText))"""
CHANGE_KERNEL = """async () => {
  await window.__nb.sessionContext.changeKernel({name: 'python3'});
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running JupyterLab serving tiny.ipynb, for the whole file."""
    tmp = tmp_path_factory.mktemp("restarts")
    env = {
        "INCRCELL_CACHE_DIR": str(tmp / "cache"),
        "XDG_CONFIG_HOME": str(tmp / "config"),
        "INCRCELL_QUICK": "off",  # for the whole file: set before conftest's _quick_cells
    }
    with jupyter_server(tmp, {"tiny": CELLS.items()}, env) as server:
        yield server


def _until(page, condition, what: str, seconds: float = REACH_S) -> None:
    """Wait (polling the kernel, never sleeping blindly) until ``condition()`` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so after {seconds} s")
        page.wait_for_timeout(250)


def test_every_action_reaches_the_kernel_after_restarts(lab: Server) -> None:
    viewport = {"width": 1400, "height": 900}
    with chromium_page("restarts-failure.png", viewport=viewport) as (page, crashes):
        retries: list[str] = []  # messages the panel had to send again (printed, not failed)
        page.on("console", lambda msg: "not acknowledged" in msg.text and retries.append(msg.text))
        sidebar = page.locator("#incrcell-sidebar")

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
            page.wait_for_function(NO_REMOVED_TOAST)
            sidebar.locator(".jp-incrcell-clear").click()
            dialog = page.locator(".jp-Dialog")
            assert "Clear" in dialog.inner_text()
            dialog.locator(".jp-mod-accept").click()
            page.wait_for_function(REMOVED_TOAST)
            states(dict.fromkeys(TINY, "ran"))

        open_lab(page, lab, "tiny.ipynb")
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
                open_lab(page, lab, "tiny.ipynb")
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # the last Clear cache reached the kernel: nothing restores
            states(dict.fromkeys(TINY, "ran"))
            check_actions()
        print(f"{len(retries)} messages sent again:", retries)
        assert not crashes, crashes
        # nothing was sent to a subshell the kernel did not have (the loss, in the log)
        assert "Unknown subshell_id" not in lab.log.read_text()
