"""The kernel layer (incrcell/kernel/) in a real, in-process IPython ``InteractiveShell``.

As IPython tests its autoreload extension: ``shell.run_cell(...)`` goes through
IPython's real cell path (events, input transformers, AST transformers,
displayhook, display publisher), without a kernel process.  A kernel restart
is a fresh shell on the same cache directory.  These run in seconds: the inner
loop for the hooks, magics, output replay and load/unload; they do not replace
the real-kernel tests (test_kernel.py, test_comm.py...).  The last test checks
the unload leak in a real kernel too.
"""

from __future__ import annotations

import builtins
import gc
import io
import sys
import weakref
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy  # noqa: F401 - see below
import pytest
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from traitlets.config import Config as ShellConfig

import incrcell
from incrcell import files
from incrcell.kernel import extension
from incrcell.kernel.comm import TARGET
from incrcell.store.signing import KEY_ENV, signing_key

from kernel import LOAD, Kernel, ok

# numpy is imported before the first shell: a "restart" here keeps the process, and the
# settings its first import changes (warnings filters...) key every cell.

Shell = InteractiveShell


class Publisher(DisplayPublisher):
    """Display messages as a kernel sends them to the notebook (``clear_output`` is a
    message, not text written to stdout), kept in order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages: list[dict[str, Any]] = []

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False):
        message = {"data": data, "metadata": metadata or {}, "transient": transient}
        self.messages.append({"type": "display", **message, "update": update})

    def clear_output(self, wait=False):
        self.messages.append({"type": "clear", "wait": wait})


class ResultHook(DisplayHook):
    """The execute result as a kernel sends it: a message, not an ``Out[n]:`` on stdout."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results: list[dict[str, Any]] = []

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict, md_dict=None) -> None:
        self.results.append(format_dict)


@dataclass
class Run:
    """What one ``run_cell`` showed."""

    result: ExecutionResult
    stdout: str
    stderr: str
    messages: list[dict[str, Any]]  # display and clear messages, incrcell's marker left out
    shown: list[dict[str, Any]]  # the execute result's mime bundle, if any
    restored: bool  # incrcell's marker was shown

    @property
    def value(self) -> Any:
        assert self.result.success, (self.result.error_before_exec, self.result.error_in_exec)
        return self.result.result


def run(shell: Shell, source: str, cell_id: str | None = None) -> Run:
    """Run one cell as a notebook would (history stored, a cell id), capturing what it shows."""
    publisher, hook = shell.display_pub, shell.displayhook
    publisher.messages.clear()
    hook.results.clear()
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        result = shell.run_cell(source, store_history=True, cell_id=cell_id)
    messages = list(publisher.messages)
    markers = [m for m in messages if m.get("metadata", {}).get("incrcell")]
    return Run(
        result,
        out.getvalue(),
        err.getvalue(),
        [m for m in messages if m not in markers],
        list(hook.results),
        bool(markers),
    )


def run_all(shell: Shell, cells: list[tuple[str, str]]) -> list[Run]:
    return [run(shell, source, cell_id) for cell_id, source in cells]


def states(shell: Shell) -> dict[int, str]:
    """The engine's state of each execution count (restored, ran, uncacheable, error)."""
    loaded = extension.active(shell)
    assert loaded is not None
    return {n: getattr(r.state, "value", r.state) for n, r in loaded.engine.by_count.items()}


def count(result: Run) -> int:
    number = result.result.execution_count
    assert number is not None
    return number


def state(shell: Shell, result: Run) -> str:
    return states(shell)[count(result)]


def hooks_in(shell: Shell) -> tuple[int, ...]:
    """How many callbacks and transformers the shell has (what loading adds)."""
    events = ("pre_execute", "pre_run_cell", "post_execute", "post_run_cell")
    return (
        *(len(shell.events.callbacks[event]) for event in events),
        len(shell.ast_transformers),
    )


@pytest.fixture
def start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_env: dict[str, str]
) -> Iterator[Callable[..., Shell]]:
    """``start()``: a fresh shell (a new kernel) with incrcell loaded, on this test's cache.

    Starting another one first unloads the previous one, as a kernel restart would
    end it; the teardown puts back what IPython changed in this process.
    """
    for name, value in cache_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    signing_key.cache_clear()
    # as in a fresh kernel, no file wrappers yet (in-process engine tests may have left them
    # installed): the builtins put back at the end must not bring back a wrapper unloading took
    files.uninstall()
    main, builtins_before = sys.modules.get("__main__"), dict(vars(builtins))
    shells: list[Shell] = []

    def new_shell(load: bool = True, displayhook_class: type = ResultHook) -> Shell:
        if shells:
            extension.unload(shells[-1])
        InteractiveShell.clear_instance()
        config = ShellConfig()
        config.HistoryManager.hist_file = ":memory:"
        shell = InteractiveShell.instance(
            config=config, display_pub_class=Publisher, displayhook_class=displayhook_class
        )
        shells.append(shell)
        if load:
            assert run(shell, "%load_ext incrcell").result.success
            assert extension.active(shell) is not None
        return shell

    yield new_shell
    for shell in shells:
        extension.unload(shell)
    InteractiveShell.clear_instance()
    if main is not None:
        sys.modules["__main__"] = main
    for name in set(vars(builtins)) - set(builtins_before):
        delattr(builtins, name)
    vars(builtins).update(builtins_before)
    signing_key.cache_clear()


PIPELINE = [
    ("imports", "import numpy as np"),
    ("data", "data = np.arange(1000.0)"),
    ("scale", "scale = 3"),
    ("scaled", "scaled = data * scale\nprint('scaled', len(scaled))"),
    ("total", "total = float(scaled.sum())\ntotal"),
]


# -- hooks: restore, record, uncacheable, through the real run_cell path ---------------------
def test_unchanged_cells_are_restored_with_their_values_and_out(start):
    shell = start()
    first = run_all(shell, PIPELINE)
    assert not any(r.restored for r in first)
    assert {state(shell, r) for r in first} == {"ran"}
    assert first[-1].value == 1498500.0

    shell = start()
    again = run_all(shell, PIPELINE)
    assert all(r.restored for r in again)
    assert {state(shell, r) for r in again} == {"restored"}
    assert again[-1].value == 1498500.0  # the execute result, Out and _ as in a plain run
    assert shell.user_ns["Out"][count(again[-1])] == 1498500.0
    assert shell.user_ns["_"] == 1498500.0
    assert shell.user_ns["scaled"].tolist() == (shell.user_ns["data"] * 3).tolist()


def test_an_edited_cell_and_its_dependents_run_the_rest_is_restored(start):
    shell = start()
    run_all(shell, PIPELINE)
    shell = start()
    edited = [*PIPELINE[:2], ("scale", "scale = 4"), *PIPELINE[3:]]
    runs = run_all(shell, edited)
    assert [r.restored for r in runs] == [True, True, False, False, False]
    assert runs[-1].value == float((shell.user_ns["data"] * 4).sum())


def test_magics_and_failing_cells_are_not_cached(start):
    shell = start()
    magic = run(shell, "%time t = 1", "magic")
    failing = run(shell, "raise ValueError('no')", "failing")
    assert magic.result.success and not failing.result.success
    assert state(shell, magic) == "uncacheable"
    assert state(shell, failing) == "error"

    shell = start()
    again = run(shell, "%time t = 1", "magic")
    assert not again.restored and state(shell, again) == "uncacheable"
    assert not run(shell, "raise ValueError('no')", "failing").restored


def test_a_run_cell_nested_in_a_cell_is_part_of_that_cell(start):
    shell = start()
    before = len(states(shell))
    captured = run(shell, "%%capture cap\nprint('inside')\nnested = 1", "capture")
    inner = run(shell, "get_ipython().run_cell('deeper = 2')\nouter = 3", "inner")
    after = run(shell, "plain = nested + deeper + outer", "after")
    # one record per cell of the notebook: the nested run_cell is not a cell of its own
    assert len(states(shell)) == before + 3
    assert state(shell, captured) == "uncacheable"  # a magic
    assert state(shell, inner) == "uncacheable"  # it calls get_ipython()
    assert "incrcell" not in shell.user_ns["cap"].stdout  # nothing of ours in what it captured
    assert shell.user_ns["cap"].stdout == "inside\n"
    assert state(shell, after) == "ran"  # the next cell is planned like any other

    shell = start()
    run(shell, "%%capture cap\nprint('inside')\nnested = 1", "capture")
    inner = run(shell, "get_ipython().run_cell('deeper = 2')\nouter = 3", "inner")
    after = run(shell, "plain = nested + deeper + outer", "after")
    assert not inner.restored
    assert after.restored and shell.user_ns["plain"] == 6


def test_code_run_between_cells_is_seen(start):
    """A silent execution or a widget's comm message may change a value in place between
    two cells: the next cell must not be keyed on the digest of what that value held."""
    cells = [("make", "a = np.zeros(3)"), ("use", "b = float(a.sum())")]
    shell = start()
    run(shell, "import numpy as np", "imports")
    run_all(shell, cells)

    shell = start()
    run(shell, "import numpy as np", "imports")
    assert run(shell, *reversed(cells[0])).restored
    shell.run_cell("a[0] = 5", silent=True)  # no cell: IPython's pre/post_execute only
    use = run(shell, *reversed(cells[1]))
    assert not use.restored and shell.user_ns["b"] == 5.0

    shell = start()
    run(shell, "import numpy as np", "imports")
    assert run(shell, *reversed(cells[0])).restored
    # a comm message (a widget's callback), dispatched as comm's handle_msg does
    shell.events.trigger("pre_execute")
    shell.user_ns["a"][1] = 7
    shell.events.trigger("post_execute")
    use = run(shell, *reversed(cells[1]))
    assert not use.restored and shell.user_ns["b"] == 7.0


# -- output replay ---------------------------------------------------------------------------
OUTPUTS = (
    "import sys\n"
    "from IPython.display import display, clear_output\n"
    "print('first')\n"
    "display({'text/plain': 'gone'}, raw=True)\n"
    "clear_output()\n"
    "print('to stderr', file=sys.stderr)\n"
    "display({'text/plain': 'shown', 'text/html': '<b>shown</b>'}, raw=True)\n"
    "print('second')\n"
    "41 + 1"
)


def test_outputs_are_recorded_and_replayed_on_restore(start):
    shell = start()
    first = run(shell, OUTPUTS, "outputs")
    assert not first.restored
    assert first.stdout == "first\nsecond\n" and first.stderr == "to stderr\n"
    assert [m["type"] for m in first.messages] == ["display", "clear", "display"]
    assert first.shown == [{"text/plain": "42"}]

    shell = start()
    again = run(shell, OUTPUTS, "outputs")
    assert again.restored
    assert (again.stdout, again.stderr) == (first.stdout, first.stderr)
    assert again.messages == first.messages  # in the same order, clear_output included
    assert again.shown == first.shown and again.value == 42
    assert shell.user_ns["Out"][count(again)] == 42


def test_a_terminal_shows_a_restored_result_once(start):
    # IPython's own display hook writes ``Out[n]: ...`` to stdout while the cell records;
    # the restore shows the result again, so what the hook wrote is not replayed
    class Terminal(DisplayHook):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.results: list[dict[str, Any]] = []  # what run() reads; Out goes to stdout

    source = "print('hi')\n21 * 2"
    first = run(start(displayhook_class=Terminal), source, "out")
    again = run(start(displayhook_class=Terminal), source, "out")
    assert first.stdout == "hi\nOut[2]: 42\n"
    assert again.restored and again.stdout == first.stdout


def test_the_marker_can_be_turned_off(start):
    shell = start()
    run(shell, "x = 1", "x")
    shell = start()
    run(shell, "%incrcell config marker=off")
    again = run(shell, "x = 1", "x")
    assert not again.restored and again.messages == []  # no marker shown...
    assert state(shell, again) == "restored"  # ...but restored all the same


# -- magics ----------------------------------------------------------------------------------
def test_status_lists_every_cell_with_its_state(start):
    shell = start()
    run_all(shell, PIPELINE)
    shell = start()
    runs = run_all(shell, [*PIPELINE[:4], ("total", "total = float(scaled.sum()) + 1")])
    status = run(shell, "%incrcell status").stdout
    assert status.startswith("incrcell on: 4 restored, 1 ran, 1 uncacheable, 0 failed")
    lines = status.splitlines()
    for r in runs:
        line = next(line for line in lines if line.strip().startswith(f"In [{count(r)}]"))
        assert ("restored" if r.restored else "ran") in line
    assert run(shell, "%incrcell").stdout.startswith("incrcell on:")  # status by default


def test_why_names_the_change_and_the_cells_read(start):
    shell = start()
    run_all(shell, PIPELINE)
    shell = start()
    runs = run_all(shell, [*PIPELINE[:2], ("scale", "scale = 4"), *PIPELINE[3:]])
    last = run(shell, "%incrcell why").stdout  # the last cell that ran
    assert last.startswith(f"In [{count(runs[4])}] `total = float(scaled.sum())` ran because")
    why = run(shell, f"%incrcell why {count(runs[3])}").stdout
    assert why.startswith(f"In [{count(runs[3])}] `scaled = data * scale` ran because")
    assert "`scale`" in why
    assert f"`data` from In [{count(runs[1])}]" in why
    assert f"`scale` from In [{count(runs[2])}]" in why
    restored = run(shell, f"%incrcell why {count(runs[0])}").stdout
    assert "was restored from the cache" in restored
    unknown = run(shell, "%incrcell why 999")
    assert isinstance(unknown.result.error_in_exec, UsageError)


def test_clear_deletes_this_sessions_entries(start):
    shell = start()
    run_all(shell, PIPELINE)
    cleared = run(shell, "%incrcell clear").stdout
    assert cleared.startswith(f"incrcell: cleared {len(PIPELINE)} cache entries")
    # the session still knows what its cells did: only the cache forgot
    assert set(states(shell).values()) >= {"ran"} and len(states(shell)) > len(PIPELINE)
    shell = start()
    assert not any(r.restored for r in run_all(shell, PIPELINE))
    run(shell, "%incrcell clear --all")
    shell = start()
    assert not any(r.restored for r in run_all(shell, PIPELINE))


def test_off_and_on(start):
    shell = start()
    assert run(shell, "%incrcell off").stdout == "incrcell: caching is off\n"
    run(shell, "y = 2", "y")
    assert "OFF" in run(shell, "%incrcell status").stdout
    run(shell, "%incrcell on")
    run(shell, "z = 3", "z")
    shell = start()
    assert not run(shell, "y = 2", "y").restored  # not recorded while off
    assert run(shell, "z = 3", "z").restored


def test_config_and_help_and_bad_usage(start):
    shell = start()
    shown = run(shell, "%incrcell config max_size=20GB").stdout
    assert "max_size" in shown
    assert "20" in run(shell, "%incrcell config").stdout
    bad = run(shell, "%incrcell config marker=maybe")
    assert isinstance(bad.result.error_in_exec, UsageError)
    for word in ("status", "why", "clear", "off", "config", "rerun", "nocache", "cache"):
        assert word in run(shell, "%incrcell --help").stdout
    wrong = run(shell, "%incrcell frobnicate")
    assert isinstance(wrong.result.error_in_exec, UsageError)
    assert "See %incrcell --help" in str(wrong.result.error_in_exec)


def test_cell_directives(start):
    clock = "import time\nnow = time.time()"
    shell = start()
    run(shell, "%%incrcell nocache\nn = 1", "nocache")
    run(shell, clock, "clock")
    run(shell, "%%incrcell cache\n" + clock, "cached-clock")
    run(shell, "r = 5", "rerun")
    shell = start()
    nocache = run(shell, "%%incrcell nocache\nn = 1", "nocache")
    assert not nocache.restored and state(shell, nocache) == "uncacheable"
    assert shell.user_ns["n"] == 1
    assert not run(shell, clock, "clock").restored  # it reads the clock
    assert run(shell, "%%incrcell cache\n" + clock, "cached-clock").restored
    rerun = run(shell, "%%incrcell rerun\nr = 5", "rerun")
    assert not rerun.restored and shell.user_ns["r"] == 5
    assert state(shell, rerun) == "ran"
    bad = run(shell, "%%incrcell sometimes\nq = 1")
    assert isinstance(bad.result.error_in_exec, UsageError) and "q" not in shell.user_ns


# -- load and unload -------------------------------------------------------------------------
class FakeFrontend:
    """A sidebar's comm, opened from the frontend with the notebook's cells, in-process."""

    def __init__(self, cells: list[tuple[str, str]]) -> None:
        self.comm_id = "frontend"
        self.sent: list[dict[str, Any]] = []
        self.cells = [{"id": cell_id, "source": source} for cell_id, source in cells]

    def open(self) -> None:
        import comm

        target = comm.get_comm_manager().targets[TARGET]
        data = {"protocol": 1, "type": "cells", "cells": self.cells}
        target(self, {"content": {"data": data}})

    def send(self, data: dict[str, Any]) -> None:
        self.sent.append(data)

    def on_msg(self, callback: Callable[[dict[str, Any]], None]) -> None:
        pass

    def on_close(self, callback: Callable[[dict[str, Any]], None]) -> None:
        pass

    def close(self) -> None:
        pass


def test_unload_leaves_nothing_behind(start):
    """``%unload_ext incrcell``: back to plain IPython; the last cells' values, the engine
    and its digest memo are not kept alive (the 80 MB array is freed)."""
    shell = start(load=False)
    plain = hooks_in(shell)
    run(shell, "%load_ext incrcell")
    loaded = extension.active(shell)
    assert loaded is not None and hooks_in(shell) != plain
    # a sidebar that shows a cell reading `big` from the namespace (its digest is kept)
    frontend = FakeFrontend([("use", "s = float(big.sum())")])
    frontend.open()
    run(shell, "import numpy as np", "imports")
    run(shell, "big = np.ones(10_000_000)", "big")
    run(shell, "s = float(big.sum())", "use")
    run(shell, "big[:3].sum()", "peek")
    assert any(m.get("type") == "state" for m in frontend.sent)
    big = weakref.ref(shell.user_ns["big"])
    engine = weakref.ref(loaded.engine)
    del loaded

    assert run(shell, "%unload_ext incrcell").result.success
    assert extension.active(shell) is None
    assert hooks_in(shell) == plain
    assert "IncrcellMagics" not in shell.magics_manager.registry
    assert "incrcell" not in shell.magics_manager.magics["line"]
    assert "incrcell" not in shell.magics_manager.magics["cell"]
    import comm

    assert TARGET not in comm.get_comm_manager().targets
    assert not files._installed and builtins.open is files._OPEN  # the wrappers are gone
    assert isinstance(run(shell, "%incrcell status").result.error_in_exec, UsageError)

    run(shell, "del big")
    gc.collect()
    assert engine() is None
    assert big() is None


def test_loading_again_after_unloading_is_a_fresh_session(start):
    shell = start()
    run_all(shell, PIPELINE[:3])
    first = extension.active(shell)
    run(shell, "%unload_ext incrcell")
    assert not run(shell, PIPELINE[2][1], "scale").restored  # plain IPython now
    run(shell, "%load_ext incrcell")
    second = extension.active(shell)
    assert second is not None and second is not first
    assert run(shell, PIPELINE[2][1], "scale").restored
    assert len(second.engine.records) == 2  # the %load_ext cell and this one


def test_loading_twice_keeps_the_first_session(start):
    shell = start()
    run(shell, "x = 1", "x")
    first = extension.active(shell)
    callbacks = hooks_in(shell)
    incrcell.load_ipython_extension(shell)  # %load_ext itself says it is loaded already
    assert extension.active(shell) is first and hooks_in(shell) == callbacks
    assert shell.magics_manager.registry["IncrcellMagics"] is first.magics


def test_importing_incrcell_does_not_import_ipython():
    """IPython finds ``load_ipython_extension`` in ``incrcell``: importing it (the core,
    the command line) must not pull in the kernel layer."""
    import subprocess

    code = (
        "import sys, incrcell, incrcell.engine, incrcell.predict, incrcell.cli\n"
        "bad = [m for m in ('IPython', 'ipykernel', 'comm', 'traitlets', 'incrcell.kernel') "
        "if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unload_in_a_real_kernel_frees_the_last_values(kernel: Kernel):
    """The same through a real kernel with a sidebar connected, as in JupyterLab: the
    sidebar's namespace digests held the array after ``%unload_ext`` (issue 11)."""
    ok([kernel.run(LOAD[1], LOAD[0])])
    frontend = kernel.comm_open("incrcell")
    use = ("use", "s = float(big.sum())")
    ok(
        kernel.run_all(
            [("imports", "import numpy as np"), ("big", "big = np.ones(10_000_000)"), use]
        )
    )
    # the notebook as the sidebar sees it has only the cell reading `big`: its prediction
    # hashes `big` from the namespace
    cells = [{"id": use[0], "source": use[1]}]
    asked = kernel.comm_send(frontend, {"protocol": 1, "type": "cells", "cells": cells})
    state = kernel.comm_wait(
        lambda m: (
            m["parent_header"].get("msg_id") == asked
            and (m["content"].get("data") or {}).get("type") == "state"
        )
    )
    assert state["content"]["data"]["cells"][0]["prediction"] == "restore"
    ok([kernel.run("probe = __import__('weakref').ref(big)")])
    ok([kernel.run("%unload_ext incrcell"), kernel.run("del big")])
    assert kernel.value("(__import__('gc').collect(), probe() is None)[1]") == "True"
