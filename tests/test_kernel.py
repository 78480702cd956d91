"""The engine inside real IPython kernels, driven like JupyterLab drives them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import nbformat

from incrcell.store import FORMAT_VERSION

from kernel import LOAD, Kernel, normalise_outputs, run_notebook, states

PIPELINE = [
    LOAD,
    (
        "data",
        "import numpy as np\nrng = np.random.default_rng(0)\ndata = rng.normal(size=(200, 3))\nprint('rows', len(data))",
    ),
    ("scale", "scale = 2.0"),
    ("feat", "feat = data * scale\nfeat.mean().round(6)"),
    ("other", "labels = ['a', 'b', 'c']\nprint(labels)"),
    (
        "html",
        "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\nsummary = {'n': len(feat)}\nsummary",
    ),
    ("tail", "total = float(feat.sum()) + len(labels)\ntotal"),
]


def test_restore_after_restart_replays_identical_outputs(kernel: Kernel):
    first = kernel.run_all(PIPELINE)
    assert all(e.status == "ok" for e in first), [e.error for e in first]
    assert not any(e.restored for e in first)
    total = kernel.value("total")

    kernel.restart()
    second = kernel.run_all(PIPELINE)
    assert states(second) == ["ran"] + ["restored"] * (len(PIPELINE) - 1)
    for a, b in zip(first, second):
        assert normalise_outputs(b.outputs) == normalise_outputs(a.outputs)
    assert kernel.value("total") == total
    assert kernel.value("feat.shape") == "(200, 3)"
    # execute results keep IPython's Out / _ semantics
    assert kernel.value("Out[7] == total") == "True"
    assert kernel.value("_ == total") == "True"
    assert kernel.value("summary") == "{'n': 200}"
    # the marker says how much time was saved
    assert "restored by incrcell" in second[1].markers[0]["data"]["text/plain"]


def test_editing_a_middle_cell_reruns_only_it_and_its_dependents(kernel: Kernel):
    kernel.run_all(PIPELINE)
    kernel.restart()
    edited = [(cid, "scale = 3.0" if cid == "scale" else src) for cid, src in PIPELINE]
    runs = dict(zip([cid for cid, _ in PIPELINE], kernel.run_all(edited)))
    assert runs["data"].restored and runs["other"].restored
    assert not runs["scale"].restored
    assert not runs["feat"].restored and not runs["tail"].restored
    assert not runs["html"].restored  # reads feat
    assert kernel.value("float(feat.sum()) + len(labels) == total") == "True"
    assert kernel.value("bool((feat == data * 3.0).all())") == "True"

    why = kernel.run("%incrcell why")
    assert "input `feat` changed" in why.stdout
    status = kernel.run("%incrcell status").stdout
    assert "2 restored" in status and "uncacheable" in status


def test_comment_only_edit_does_not_invalidate(kernel: Kernel):
    kernel.run_all(PIPELINE[:3])
    kernel.restart()
    edited = PIPELINE[:2] + [("scale", "# the factor\nscale = 2.0   # unchanged\n\n")]
    assert states(kernel.run_all(edited)) == ["ran", "restored", "restored"]


def test_source_change_is_reported_by_cell_id(kernel: Kernel):
    kernel.run_all(PIPELINE[:3])
    kernel.restart()
    kernel.run_all(PIPELINE[:2] + [("scale", "scale = 5.0")])
    assert "source changed" in kernel.run("%incrcell why").stdout


def test_exceptions_are_never_cached(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    cell = ("boom", "x = 1\nprint('before')\nraise ValueError('no')")
    first = kernel.run(cell[1], cell[0])
    assert first.status == "error" and first.error["ename"] == "ValueError"
    again = kernel.run(cell[1], cell[0])
    assert again.status == "error" and not again.restored
    assert again.stdout == "before\n"
    assert "raised an exception" in kernel.run("%incrcell status").stdout


def _interrupted(kernel: Kernel, code: str, cell_id: str):
    msg = kernel.send(code, cell_id)
    time.sleep(1.5)
    kernel.interrupt()
    return kernel.collect(msg)


def test_interrupted_cell_is_not_cached_and_keeps_plain_state(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run("steps = []", "init")
    code = "import time\nfor i in range(600):\n    steps.append(i)\n    time.sleep(0.05)"
    result = _interrupted(kernel, code, "slow")
    assert result.status == "error" and result.error["ename"] == "KeyboardInterrupt"
    done = int(kernel.value("len(steps)"))
    assert 0 < done < 600  # the namespace is exactly as plain IPython leaves it
    assert "raised an exception" in kernel.run("%incrcell status").stdout
    # the same cell with the same inputs is not restored: it runs (and is interrupted) again
    kernel.run("steps = []", "init")
    again = _interrupted(kernel, code, "slow")
    assert again.error["ename"] == "KeyboardInterrupt" and not again.restored


def test_magics_and_shell_escapes_are_uncacheable_with_a_reason(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run("%matplotlib inline", "mpl")
    kernel.run("files = !ls", "ls")
    status = kernel.run("%incrcell status").stdout
    assert status.count("uses IPython magics or shell commands") >= 2
    kernel.restart()
    kernel.run(*LOAD[::-1])
    assert not kernel.run("%matplotlib inline", "mpl").restored


def test_matplotlib_figure_and_stderr_replay(kernel: Kernel):
    cells = [
        LOAD,
        ("mpl", "%matplotlib inline"),
        (
            "plot",
            "import sys\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
            "ax.plot([1, 3, 2])\nprint('to stderr', file=sys.stderr)\nprint('to stdout')",
        ),
        # the figure is drawn when the cell ends, after its result is shown
        ("result", "print('before')\nplt.figure()\nplt.plot([3, 1])\n42"),
    ]
    first = kernel.run_all(cells)
    order = ["stream", "execute_result", "display_data"]
    assert [o["output_type"] for o in normalise_outputs(first[3].outputs)] == order
    assert any("image/png" in o.get("data", {}) for o in first[2].outputs)
    # while a cell records, its streams reach the notebook in the order written (see outputs.py)
    streams = [
        o["name"] for o in normalise_outputs(first[2].outputs) if o["output_type"] == "stream"
    ]
    assert streams[-2:] == ["stderr", "stdout"]
    kernel.restart()
    second = kernel.run_all(cells)
    assert second[2].restored
    assert normalise_outputs(second[2].outputs) == normalise_outputs(first[2].outputs)
    assert second[3].restored
    assert normalise_outputs(second[3].outputs) == normalise_outputs(first[3].outputs)
    assert second[3].outputs[-1]["metadata"]["incrcell"]["restored"]  # the note comes last
    assert kernel.value("type(fig).__name__") == "'Figure'"


def test_unload_restores_plain_ipython(kernel: Kernel):
    before = kernel.value(
        "(len(get_ipython().events.callbacks['pre_run_cell']), "
        "len(get_ipython().events.callbacks['post_run_cell']), "
        "len(get_ipython().ast_transformers))"
    )
    kernel.run_all(PIPELINE[:3])
    kernel.run("%load_ext incrcell")  # loading twice is harmless
    kernel.run("%unload_ext incrcell")
    after = kernel.value(
        "(len(get_ipython().events.callbacks['pre_run_cell']), "
        "len(get_ipython().events.callbacks['post_run_cell']), "
        "len(get_ipython().ast_transformers))"
    )
    assert after == before
    assert not kernel.run(PIPELINE[2][1], "scale").restored
    gone = kernel.run("%incrcell status")
    assert gone.status == "error" and "UsageError" in gone.error["ename"]
    kernel.run("%load_ext incrcell")  # and loading again mid-session works
    assert kernel.run(PIPELINE[2][1], "scale").restored


def test_two_notebooks_sharing_cells_share_entries(kernel: Kernel, workdir: Path, cache_env):
    kernel.run_all(PIPELINE)
    other = Kernel(workdir, cache_env)
    try:
        shared = [(f"other-{cid}", src) for cid, src in PIPELINE[:4]]
        runs = other.run_all(shared + [("other-new", "extra = feat.max()\nbool(extra > 0)")])
        assert states(runs) == ["ran", "restored", "restored", "restored", "ran"]
        assert runs[-1].result == "True"
    finally:
        other.shutdown()


def test_corrupted_entries_are_misses_not_crashes(kernel: Kernel, cache_env):
    kernel.run_all(PIPELINE)
    cache = Path(cache_env["INCRCELL_CACHE_DIR"])
    files = [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files
    for i, path in enumerate(sorted(files)):
        data = bytearray(path.read_bytes())
        if i % 3 == 0:
            data[len(data) // 2] ^= 0xFF  # flipped bit
        elif i % 3 == 1:
            data = data[: len(data) // 2]  # cut short
        else:
            data = b"garbage"
        path.write_bytes(bytes(data))
    kernel.restart()
    runs = kernel.run_all(PIPELINE)
    assert all(r.status == "ok" for r in runs), [r.error for r in runs]
    assert not any(r.restored for r in runs)
    assert kernel.value("total") == kernel.value("float(feat.sum()) + len(labels)")
    stderr = "".join(
        o["text"]
        for r in runs
        for o in r.outputs
        if o["output_type"] == "stream" and o["name"] == "stderr"
    )
    assert "incrcell: " in stderr  # the user is told, one plain line per problem
    assert all(line.startswith("incrcell: ") for line in stderr.splitlines())
    # and the rewritten entries are good again
    kernel.restart()
    assert all(r.restored for r in kernel.run_all(PIPELINE)[1:])


def test_kernel_killed_while_writing_leaves_no_half_entry(kernel: Kernel, cache_env):
    kernel.run(*LOAD[::-1])
    cache = Path(cache_env["INCRCELL_CACHE_DIR"])
    big = ("big", "import numpy as np\nbig = np.ones(120_000_000)")  # 960 MB to write
    kernel.send(big[1], big[0])
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tmp-") for p in cache.rglob("*")):
        assert time.monotonic() < deadline, "the value was never written"
        time.sleep(0.01)
    os.kill(kernel.km.provisioner.process.pid, signal.SIGKILL)
    kernel.restart()
    kernel.run(*LOAD[::-1])
    again = kernel.run(big[1], big[0])
    assert again.status == "ok" and not again.restored
    assert kernel.value("float(big.sum())") == "120000000.0"
    kernel.restart()
    kernel.run(*LOAD[::-1])
    assert kernel.run(big[1], big[0]).restored


def test_kernel_killed_before_its_writes_behind_loses_them_safely(kernel: Kernel, cache_env):
    """A value written behind (store/behind.py) is lost with a kernel killed right after its
    cell: the cell runs again, with the right value, and is recorded then."""
    kernel.run(*LOAD[::-1])
    cell = ("mid", "import numpy as np\nmid = np.arange(20_000_000) * 3")  # 160 MB
    assert kernel.run(cell[1], cell[0]).status == "ok"
    os.kill(kernel.km.provisioner.process.pid, signal.SIGKILL)  # its write may be pending
    kernel.restart()
    kernel.run(*LOAD[::-1])
    assert kernel.run(cell[1], cell[0]).status == "ok"
    assert kernel.value("int(mid[-1])") == str(19_999_999 * 3)
    kernel.restart()  # asked to shut down, the kernel waits for its writes
    kernel.run(*LOAD[::-1])
    assert kernel.run(cell[1], cell[0]).restored
    assert kernel.value("int(mid[-1])") == str(19_999_999 * 3)


def test_magics_help_off_on_config_clear(kernel: Kernel, tmp_path: Path):
    kernel.run(*LOAD[::-1])
    help_text = kernel.run("%incrcell --help").stdout
    for word in ("status", "why", "clear", "off", "config", "rerun", "nocache"):
        assert word in help_text
    bad = kernel.run("%incrcell frobnicate")
    assert bad.status == "error" and "See %incrcell --help" in bad.error["evalue"]

    kernel.run("a = 1", "a")
    kernel.run("%incrcell off")
    kernel.run("b = 2", "b")
    kernel.run("%incrcell on")
    assert kernel.run("a = 1", "a").restored
    assert not kernel.run("b = 2", "b").restored  # nothing was recorded while off
    assert kernel.run("b = 2", "b").restored

    kernel.run("%incrcell config marker=off")
    quiet = kernel.run("a = 1", "a")
    assert quiet.outputs == [] and quiet.status == "ok"
    bad = kernel.run("%incrcell config marker=maybe")
    assert bad.status == "error" and "on/off" in bad.error["evalue"]

    (tmp_path / "a-file").write_text("not a directory")
    refused = kernel.run(f"%incrcell config marker=on cache_dir={tmp_path / 'a-file' / 'cache'}")
    assert refused.status == "error" and "cannot be used" in refused.error["evalue"]
    assert "marker = False" in kernel.run("%incrcell config").stdout  # all or nothing

    elsewhere = tmp_path / "elsewhere"
    kernel.run(f"%incrcell config cache_dir={elsewhere} marker=on")
    assert not kernel.run("a = 1", "a").restored
    assert (elsewhere / f"v{FORMAT_VERSION}").is_dir()

    assert "cleared" in kernel.run("%incrcell clear").stdout
    assert not kernel.run("a = 1", "a").restored
    kernel.run("%incrcell clear --all")
    assert not kernel.run("b = 2", "b").restored


def test_rerun_and_nocache_cell_magics(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run("n = 41\nprint('computed')", "c")
    forced = kernel.run("%%incrcell rerun\nn = 41\nprint('computed')\nn + 1", "c")
    assert not forced.restored and forced.stdout == "computed\n" and forced.result == "42"
    assert kernel.run("%%incrcell rerun\nn = 41\nprint('computed')\nn + 1", "c").restored is False
    assert kernel.run("n = 41\nprint('computed')\nn + 1", "c").restored  # re-recorded

    for _ in range(2):
        never = kernel.run("%%incrcell nocache\nm = n * 2\nm", "d")
        assert not never.restored and never.result == "82"
    assert "excluded with %%incrcell nocache" in kernel.run("%incrcell status").stdout


def test_unhashable_input_and_unpicklable_output_are_uncacheable(kernel: Kernel):
    kernel.run(*LOAD[::-1])
    kernel.run("import threading\nlock = threading.Lock()", "lock")
    kernel.run("uses = lock.locked()", "uses")
    kernel.run("gen = (i for i in range(3))", "gen")
    status = kernel.run("%incrcell status").stdout
    assert "cannot be pickled" in status or "cannot be hashed" in status
    assert kernel.run("uses = lock.locked()", "uses").restored is False
    assert kernel.run("%incrcell why").stdout.count("uncacheable") == 1


def test_functions_from_earlier_cells_are_followed(kernel: Kernel):
    cells = [LOAD, ("k", "k = 2"), ("f", "def f(x):\n    return x * k"), ("use", "y = f(10)\ny")]
    assert kernel.run_all(cells)[3].result == "20"
    kernel.restart()
    runs = kernel.run_all([LOAD, ("k", "k = 3")] + cells[2:])
    assert runs[2].restored  # defining f does not read k
    assert not runs[3].restored and runs[3].result == "30"
    kernel.restart()
    assert kernel.run_all([LOAD, ("k", "k = 3")] + cells[2:])[3].restored


def test_plain_nbclient_notebook_restores_on_second_run(tmp_path: Path, workdir: Path, cache_env):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for _, src in PIPELINE]
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = 4
    path = workdir / "pipeline.ipynb"
    nbformat.write(nb, path)
    first = run_notebook(path, cache_env)
    second = run_notebook(path, cache_env)
    for a, b in zip(first.cells[1:], second.cells[1:]):
        assert any(o.get("metadata", {}).get("incrcell") for o in b.outputs)
        assert normalise_outputs(b.outputs) == normalise_outputs(a.outputs)


def test_changing_a_data_file_reruns_the_cells_that_read_it(kernel: Kernel, workdir: Path):
    (workdir / "data.csv").write_text("x,y\n1,2\n3,4\n")
    cells = [
        LOAD,
        ("read", "import pandas as pd\ndf = pd.read_csv('data.csv')"),
        ("total", "total = int(df['x'].sum())\ntotal"),
        ("other", "unrelated = 7"),
        ("save", "df.to_csv('copy.csv')"),
    ]
    first = kernel.run_all(cells)
    assert first[2].result == "4"
    (workdir / "copy.csv").unlink()
    kernel.restart()
    assert states(kernel.run_all(cells)) == ["ran", "restored", "restored", "restored", "restored"]
    assert (workdir / "copy.csv").read_text().startswith(",x,y")  # written back by the restore

    (workdir / "data.csv").write_text("x,y\n1,2\n3,4\n5,6\n")
    kernel.restart()
    runs = kernel.run_all(cells)
    assert states(runs) == ["ran", "ran", "ran", "restored", "ran"]
    assert (workdir / "copy.csv").read_text().count("\n") == 4
    assert runs[2].result == "9"
    assert "file `data.csv` changed" in kernel.run("%incrcell why 2").stdout


def test_editing_a_local_module_under_autoreload(kernel: Kernel, workdir: Path):
    """%autoreload keeps working: the edited code runs, and is cached once it is loaded."""
    (workdir / "inc_auto.py").write_text("def f(x):\n    return x * 2\n")
    cells = [
        LOAD,
        ("auto", "%load_ext autoreload\n%autoreload 2"),
        ("import", "import inc_auto"),
        ("use", "y = inc_auto.f(21)\ny"),
    ]
    assert kernel.run_all(cells)[3].result == "42"
    time.sleep(1.1)  # a new mtime, as an editor would leave
    (workdir / "inc_auto.py").write_text("def f(x):\n    return x * 3\n")
    first = kernel.run(cells[3][1], "use")
    assert first.result == "63" and not first.restored
    assert "changed on disk after it was imported" in kernel.run("%incrcell why").stdout
    assert kernel.run(cells[3][1], "use").result == "63"  # reloaded: cacheable again
    kernel.restart()
    runs = kernel.run_all(cells)
    assert runs[3].restored and runs[3].result == "63"


def test_a_restore_that_imports_pandas_sees_ipython(kernel: Kernel):
    """pandas configures its display when imported: under IPython, not as in a terminal."""
    cells = [
        LOAD,
        (
            "a",
            "import pandas as pd\ndf = pd.DataFrame({f'column_{i}': range(3) "
            "for i in range(12)})\ndf",
        ),
    ]
    first = kernel.run_all(cells)
    kernel.restart()
    second = kernel.run_all(cells)
    assert second[1].restored and second[1].result == first[1].result
    assert kernel.run("pd.get_option('display.max_columns')").result == "20"


def test_a_silent_execution_between_cells_is_not_missed(kernel: Kernel):
    """The digests of values a restore just bound stand only while no user code runs:
    a silent execution (as a widget or an extension sends) may change them."""
    cells = [LOAD, ("a", "import numpy as np\narr = np.zeros(3)"), ("b", "s = float(arr.sum())\ns")]
    kernel.run_all(cells)
    kernel.restart()
    assert kernel.run(cells[0][1], "load") and kernel.run(cells[1][1], "a").restored
    msg_id = kernel.kc.execute("arr[0] = 5", silent=True)
    reply = kernel.kc.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.kc.get_shell_msg(timeout=60)
    after = kernel.run(cells[2][1], "b")
    assert not after.restored and after.result == "5.0"
