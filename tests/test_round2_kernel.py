"""Issue 9, the glue's side: nested cells, stream order, interrupts around the cache,
special files in the cache, restored functions' source, unseeded randomness, hidden frames.

Each test runs real kernels with a restart between versions and checks both the cell
states and the values a plain run gives.
"""

from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

from incrcell.store import FORMAT_VERSION

from kernel import LOAD, Execution, Kernel, normalise_outputs, ok, states

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def traceback_text(execution: Execution) -> str:
    assert execution.error is not None
    return _ANSI.sub("", "\n".join(execution.error["traceback"]))


def stderr(execution: Execution) -> str:
    return "".join(
        o["text"]
        for o in execution.outputs
        if o["output_type"] == "stream" and o["name"] == "stderr"
    )


def wait_for(path: Path, timeout: float = 60) -> None:
    """Wait until the kernel signals (by creating ``path``) that it reached a point."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} never appeared")
        time.sleep(0.01)


# -- nested cells ---------------------------------------------------------------------

CAPTURE = [
    LOAD,
    ("cap", "%%capture cap\nprint('inside')\nx = 41 + 1"),
    ("show", "captured = (cap.stdout, len(cap.outputs))\ncaptured"),
    ("after", "y = x * 2"),
]


def test_code_run_by_a_magic_is_part_of_its_cell(kernel: Kernel):
    first = kernel.run_all(CAPTURE)
    ok(first)
    assert kernel.value("cap.stdout") == "'inside\\n'" and kernel.value("cap.outputs") == "[]"
    kernel.restart()
    second = kernel.run_all(CAPTURE)
    # the magic's cell runs; the cells reading what it left restore (same contents)
    assert states(second) == ["ran", "ran", "restored", "restored"]
    # nothing of incrcell's inside the user's capture: a plain run's values
    assert kernel.value("cap.stdout") == "'inside\\n'" and kernel.value("cap.outputs") == "[]"
    assert kernel.value("captured") == "('inside\\n', 0)" and kernel.value("y") == "84"
    assert not second[1].outputs  # %%capture shows nothing
    status = kernel.run("%incrcell status").stdout
    assert "uses IPython magics" in status


def test_cells_after_a_nested_run_are_cells_again(kernel: Kernel):
    cells = [LOAD, ("t", "%%time\nz = 3"), ("cap", "%%capture c\nw = 1"), ("plain", "v = 5")]
    kernel.run_all(cells)
    kernel.restart()
    second = kernel.run_all(cells)
    assert states(second) == ["ran", "ran", "ran", "restored"]
    assert kernel.value("(z, w, v)") == "(3, 1, 5)"


# -- stream order ---------------------------------------------------------------------


def test_stderr_and_stdout_reach_the_notebook_in_the_order_written(kernel: Kernel):
    cells = [
        LOAD,
        (
            "mixed",
            "import sys\nprint('e1', file=sys.stderr)\nprint('o1')\n"
            "print('e2', file=sys.stderr)\nprint('o2')\nmixed = 1",
        ),
    ]
    first = kernel.run_all(cells)
    expected = [("stderr", "e1\n"), ("stdout", "o1\n"), ("stderr", "e2\n"), ("stdout", "o2\n")]
    assert [(o["name"], o["text"]) for o in normalise_outputs(first[1].outputs)] == expected
    kernel.restart()
    second = kernel.run_all(cells)
    assert second[1].restored
    assert [(o["name"], o["text"]) for o in normalise_outputs(second[1].outputs)] == expected


# -- interrupts -----------------------------------------------------------------------

SLOW_MODULE = '''
import os
import select


class Slow:
    """A value whose pickling or unpickling waits (for an interrupt) when told to."""

    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        if os.path.exists("block-store"):
            open("storing", "w").close()
            while True:
                select.select([], [], [], 0.01)  # waits without naming the clock
        return (load, (self.n,))


def load(n):
    if os.path.exists("block-load"):
        open("loading", "w").close()
        while True:
            select.select([], [], [], 0.01)  # waits without naming the clock
    return Slow(n)
'''

SLOW = ("mk", "import slowmod\nv = slowmod.Slow(3)\nprint('made')")


def test_interrupt_while_loading_a_hit_stops_the_cell_without_running_it(
    kernel: Kernel, workdir: Path
):
    (workdir / "slowmod.py").write_text(SLOW_MODULE)
    cold = kernel.run_all([LOAD, SLOW])
    assert cold[1].status == "ok" and cold[1].stdout == "made\n"
    kernel.restart()
    kernel.run(*LOAD[::-1])
    (workdir / "block-load").touch()
    msg = kernel.send(SLOW[1], SLOW[0])
    wait_for(workdir / "loading")
    kernel.interrupt()
    stopped = kernel.collect(msg)
    assert stopped.status == "error" and stopped.error["ename"] == "KeyboardInterrupt"
    assert "made" not in stopped.stdout  # the cell did not run
    shown = stderr(stopped) + stopped.stdout + traceback_text(stopped)
    assert "Error in callback" not in shown and "incrcell/" not in shown
    assert kernel.value("'v' in dir() or 'slowmod' in dir()") == "False"  # namespace untouched
    # the cache is intact: the same cell is restored once loading may finish
    (workdir / "block-load").unlink()
    again = kernel.run(SLOW[1], SLOW[0])
    assert again.restored and again.stdout == "made\n"
    assert kernel.value("v.n") == "3"


def test_interrupt_while_recording_says_the_cell_ran(kernel: Kernel, workdir: Path):
    (workdir / "slowmod.py").write_text(SLOW_MODULE)
    kernel.run(*LOAD[::-1])
    (workdir / "block-store").touch()
    msg = kernel.send(SLOW[1], SLOW[0])
    wait_for(workdir / "storing")
    kernel.interrupt()
    recorded = kernel.collect(msg)
    assert recorded.status == "ok" and recorded.stdout == "made\n"
    assert "it ran, but is not in the cache" in stderr(recorded)
    assert "runs as usual" not in stderr(recorded) and "Error in callback" not in stderr(recorded)
    assert kernel.value("v.n") == "3"
    assert "interrupted while recording" in kernel.run("%incrcell status").stdout
    (workdir / "block-store").unlink()
    kernel.restart()
    assert states(kernel.run_all([LOAD, SLOW])) == ["ran", "ran"]  # nothing was stored
    kernel.restart()
    assert states(kernel.run_all([LOAD, SLOW])) == ["ran", "restored"]
    assert kernel.value("v.n") == "3"


# -- special files in the cache -------------------------------------------------------


def test_a_named_pipe_in_the_cache_is_a_miss_not_a_hang(kernel: Kernel, cache_env):
    cells = [LOAD, ("a", "a = [1, 2, 3]"), ("b", "b = sum(a)")]
    kernel.run_all(cells)
    root = Path(cache_env["INCRCELL_CACHE_DIR"]) / f"v{FORMAT_VERSION}"
    for kind in ("entries", "values"):
        for path in (root / kind).glob("*/*"):
            path.unlink()
            os.mkfifo(path)
    kernel.restart()
    second = [kernel.run(source, cell_id, timeout=60) for cell_id, source in cells]
    assert states(second) == ["ran", "ran", "ran"]
    assert "not a regular file" in stderr(second[1])
    assert kernel.value("b") == "6"
    kernel.restart()  # the pipes were replaced by the new entries
    assert states(kernel.run_all(cells)) == ["ran", "restored", "restored"]
    assert kernel.value("b") == "6"


# -- restored functions keep their source -------------------------------------------

FUNCTIONS = [
    LOAD,
    ("f", "def f(x):\n    y = x + 1\n    return 10 / (y - 2)\n"),
    ("cls", "class Box:\n    def area(self, w):\n        return w * self.missing\n"),
    ("use", "r = f(3)"),
]


def test_restored_functions_have_their_source_after_a_restart(kernel: Kernel):
    kernel.run_all(FUNCTIONS)
    kernel.restart()
    second = kernel.run_all(FUNCTIONS)
    assert states(second) == ["ran", "restored", "restored", "restored"]
    assert kernel.value("r") == "5.0"
    source = kernel.run("import inspect\nprint(inspect.getsource(f))").stdout
    assert "return 10 / (y - 2)" in source
    assert "return w * self.missing" in kernel.run("print(inspect.getsource(Box.area))").stdout
    failed = kernel.run("f(1)")
    assert failed.error["ename"] == "ZeroDivisionError"
    text = traceback_text(failed)
    assert "return 10 / (y - 2)" in text and "Could not get source" not in text
    failed = kernel.run("Box().area(2)")
    assert "return w * self.missing" in traceback_text(failed)


# -- unseeded randomness ---------------------------------------------------------------


def test_unseeded_draws_are_fresh_after_every_restart(kernel: Kernel):
    cells = [
        LOAD,
        ("imp", "import numpy as np\nimport random"),
        ("draw", "x = np.random.rand(3)\nx.tolist()"),
        ("pydraw", "p = random.random()"),
    ]
    first = kernel.run_all(cells)
    x1, p1 = kernel.value("x.tolist()"), kernel.value("p")
    kernel.restart()
    second = kernel.run_all(cells)
    assert states(second) == ["ran", "restored", "ran", "ran"]
    assert kernel.value("x.tolist()") != x1 and kernel.value("p") != p1  # fresh, as plainly
    assert first[2].result != second[2].result
    why = kernel.run("%incrcell why 3").stdout
    assert "fresh entropy" in why
    # a later unseeded draw is fresh too: the restored import did not set numpy's state
    kernel.restart()
    kernel.run_all(cells[:2])
    assert kernel.value("np.random.rand(3).tolist()") != x1


def test_an_import_cell_does_not_replay_numpys_state(kernel: Kernel):
    cells = [LOAD, ("imp", "import numpy as np")]
    kernel.run_all(cells)
    state = kernel.value("np.random.get_state()[1][:4].tolist()")
    kernel.restart()
    assert states(kernel.run_all(cells)) == ["ran", "restored"]
    assert kernel.value("np.random.get_state()[1][:4].tolist()") != state


def test_seeded_streams_are_restored_exactly(kernel: Kernel):
    cells = [
        LOAD,
        ("imp", "import numpy as np\nnp.random.seed(5)\nimport random\nrandom.seed(6)"),
        ("draw", "x = np.random.rand(3)\nq = random.random()"),
        ("more", "y = np.random.rand(2)\nr = random.random()"),
    ]
    kernel.run_all(cells)
    values = kernel.value("(x.tolist(), q, y.tolist(), r)")
    kernel.restart()
    assert states(kernel.run_all(cells)) == ["ran", "restored", "restored", "restored"]
    assert kernel.value("(x.tolist(), q, y.tolist(), r)") == values
    # the next unrecorded draws continue the seeded streams, as in a plain run
    following = kernel.value("(np.random.rand(), random.random())")
    kernel.restart()
    kernel.run(*LOAD[::-1])
    plain = kernel.run(
        "%%incrcell nocache\nimport numpy as np\nnp.random.seed(5)\nimport random\n"
        "random.seed(6)\nnp.random.rand(3); random.random()\n"
        "np.random.rand(2); random.random()\n"
        "following = (np.random.rand(), random.random())"
    )
    assert plain.status == "ok"
    assert kernel.value("following") == following


def test_reseeding_from_entropy_makes_draws_fresh_again(kernel: Kernel):
    cells = [
        LOAD,
        ("imp", "import numpy as np\nnp.random.seed(1)"),
        ("fresh", "np.random.seed()"),
        ("draw", "x = np.random.rand()"),
    ]
    kernel.run_all(cells)
    x = kernel.value("x")
    kernel.restart()
    second = kernel.run_all(cells)
    assert states(second)[3] == "ran" and kernel.value("x") != x


def test_cache_directive_accepts_fresh_draws_without_fixing_later_ones(kernel: Kernel):
    cells = [
        LOAD,
        ("imp", "import numpy as np"),
        ("kept", "%%incrcell cache\nx = np.random.rand()"),
    ]
    kernel.run_all(cells)
    x = kernel.value("x")
    kernel.restart()
    assert states(kernel.run_all(cells)) == ["ran", "restored", "restored"]
    assert kernel.value("x") == x  # accepted replay
    # numpy's generator still holds fresh entropy: unseeded draws differ from the recording
    first = kernel.value("np.random.rand()")
    kernel.restart()
    kernel.run_all(cells)
    assert kernel.value("np.random.rand()") != first


# -- incrcell's frames stay out of tracebacks --------------------------------------------


def test_incrcell_frames_are_hidden_in_tracebacks(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run("import numpy as np\nnp.random.seed(0)", "imp")
    failed = kernel.run("import sys\nsys.stdout.write(5)", "write")
    assert failed.error["ename"] == "TypeError"
    assert "incrcell" not in traceback_text(failed)
    failed = kernel.run("np.random.seed('not a seed')", "seed")
    assert failed.error["ename"] in ("TypeError", "ValueError")
    assert "incrcell" not in traceback_text(failed)
    failed = kernel.run(
        "from IPython.display import display\ndisplay({'a': 1}, raw=True)\n1/0", "disp"
    )
    assert "incrcell" not in traceback_text(failed)


def test_interrupted_code_is_one_plain_statement():
    """The code that replaces an interrupted cell raises KeyboardInterrupt and nothing else."""
    from incrcell.kernel.hooks import _interrupted_code

    code = _interrupted_code()
    assert isinstance(code.body[0], ast.Raise) and len(code.body) == 1
    try:
        exec(compile(code, "<cell>", "exec"), {})
    except KeyboardInterrupt as exc:
        assert "did not run" in str(exc)
    else:
        raise AssertionError("no KeyboardInterrupt")
