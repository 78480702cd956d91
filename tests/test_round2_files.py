"""Issue 9, item 1 (Python side): every Python-visible file and directory access while a
cell records, through real kernels, with a restart between versions.

Each test runs a notebook, changes the world (or nothing), restarts the kernel and
runs it again, and checks both what incrcell did with each cell (restored, ran,
uncacheable) and that the values are those of a plain run.
"""

from __future__ import annotations

import bz2
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from kernel import LOAD, Execution, Kernel, ok


def states(kernel: Kernel, executions: list[Execution]) -> list[str]:
    """restored / ran / uncacheable / error, as ``%incrcell status`` says, per execution."""
    found = []
    for execution in executions:
        found.append(
            kernel.value(
                "str(__import__('incrcell.kernel.extension').kernel.extension"
                ".active(get_ipython()).engine"
                f".by_count[{execution.execution_count}].state)"
            ).strip("'")
        )
    return found


def reason(kernel: Kernel, execution: Execution) -> str:
    """The reason of one execution by code and details (its repr: ``FILE_CHANGED(path=...)``)."""
    return kernel.value(
        "__import__('incrcell.kernel.extension').kernel.extension"
        ".active(get_ipython()).engine"
        f".by_count[{execution.execution_count}].reason"
    )


def test_a_cell_calling_open_itself_is_cached_and_keyed_on_the_file(kernel, workdir):
    """IPython's own ``open`` in the namespace is a library function, not session state."""
    (workdir / "payload.txt").write_text("one")
    cells = [LOAD, ("read", "text = open('payload.txt').read()\ntext")]
    assert ok(kernel.run_all(cells))[1].result == "'one'"
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "restored" and runs[1].result == "'one'"
    (workdir / "payload.txt").write_text("two")
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "ran" and runs[1].result == "'two'"
    assert reason(kernel, runs[1]) == "FILE_CHANGED(path='payload.txt')"


def test_a_file_read_inside_a_function_from_an_earlier_cell_is_an_input(kernel, workdir):
    (workdir / "payload.txt").write_text("one")
    cells = [
        LOAD,
        ("def", "def load():\n    with open('payload.txt') as f:\n        return f.read()"),
        ("use", "x = load()"),
    ]
    ok(kernel.run_all(cells))
    assert kernel.value("x") == "'one'"
    kernel.restart()
    assert states(kernel, ok(kernel.run_all(cells)))[1:] == ["restored", "restored"]
    (workdir / "payload.txt").write_text("two")
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1:] == ["restored", "ran"]
    assert reason(kernel, runs[2]) == "FILE_CHANGED(path='payload.txt')"
    assert kernel.value("x") == "'two'"


def test_a_listing_after_a_new_directory_appears_reruns(kernel, workdir):
    cells = [
        LOAD,
        ("make", "import os\nos.makedirs('runs/r1', exist_ok=True)"),
        ("list", "names = sorted(os.listdir('runs'))"),
    ]
    ok(kernel.run_all(cells))
    kernel.restart()
    assert states(kernel, ok(kernel.run_all(cells)))[1:] == ["restored", "restored"]
    (workdir / "runs" / "r2").mkdir()
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[2] == "ran"
    assert reason(kernel, runs[2]) == "DIRECTORY_CHANGED(path='runs')"
    assert kernel.value("names") == "['r1', 'r2']"


def test_a_glob_after_a_new_matching_file_reruns(kernel, workdir):
    (workdir / "part-1.txt").write_text("1")
    cells = [LOAD, ("glob", "import glob\nparts = sorted(glob.glob('part-*.txt'))")]
    ok(kernel.run_all(cells))
    (workdir / "notes.md").write_text("not a part")
    kernel.restart()
    assert states(kernel, ok(kernel.run_all(cells)))[1] == "restored"
    (workdir / "part-2.txt").write_text("2")
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "ran"
    assert reason(kernel, runs[1]) == "FILES_MATCHING_CHANGED(pattern='part-*.txt')"
    assert kernel.value("parts") == "['part-1.txt', 'part-2.txt']"


def tree(root: Path) -> list[tuple[str, str]]:
    return sorted(
        (
            str(p.relative_to(root)),
            "link" if p.is_symlink() else "dir" if p.is_dir() else p.read_text(),
        )
        for p in root.rglob("*")
    )


def test_directory_changes_are_replayed_and_a_later_rename_works(kernel, workdir):
    (workdir / "raw").mkdir()
    (workdir / "raw" / "a.txt").write_text("a")
    cells = [
        LOAD,
        (
            "dirs",
            "import os, shutil\n"
            "os.makedirs('out/stage1')\n"
            "from pathlib import Path\n"
            "Path('out/stage1/result.txt').write_text('r')\n"
            "shutil.copytree('raw', 'out/raw_copy')\n"
            "os.makedirs('scratch/tmp')\n"
            "shutil.rmtree('scratch')\n"
            "os.rename('out/stage1', 'out/final')\n"
            "os.symlink('final/result.txt', 'out/latest')",
        ),
        ("later", "os.rename('out/final', 'out/published')\nn = len(os.listdir('out'))"),
    ]
    ok(kernel.run_all(cells))
    plain = tree(workdir)
    for name in ("out",):
        shutil.rmtree(workdir / name)
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "restored"
    assert tree(workdir) == plain  # the later rename ran on the restored tree
    assert os.readlink(workdir / "out" / "latest") == "final/result.txt"
    assert kernel.value("n") == "3"


def test_the_load_it_if_saved_else_compute_pattern(kernel, workdir):
    cells = [
        LOAD,
        (
            "cached",
            "import os, pickle\nfrom pathlib import Path\n"
            "if os.path.exists('model.pkl'):\n"
            "    model = pickle.loads(Path('model.pkl').read_bytes())\n"
            "    source = 'loaded'\n"
            "else:\n    model, source = {'w': 1}, 'computed'",
        ),
    ]
    ok(kernel.run_all(cells))
    assert kernel.value("source") == "'computed'"
    with open(workdir / "model.pkl", "wb") as f:
        import pickle

        pickle.dump({"w": 2}, f)
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "ran"
    assert reason(kernel, runs[1]) == "PATH_CREATED(path='model.pkl')"
    assert kernel.value("(source, model)") == "('loaded', {'w': 2})"


def test_readers_that_kept_their_own_open_bz2_and_numpy(kernel, workdir):
    (workdir / "data.bz2").write_bytes(bz2.compress(b"first"))
    np.save(workdir / "arr.npy", np.arange(3))
    cells = [
        LOAD,
        ("bz2", "import bz2\ntext = bz2.open('data.bz2').read()"),
        ("npy", "import numpy as np\ntotal = int(np.load('arr.npy').sum())"),
    ]
    ok(kernel.run_all(cells))
    kernel.restart()
    assert states(kernel, ok(kernel.run_all(cells)))[1:] == ["restored", "restored"]
    (workdir / "data.bz2").write_bytes(bz2.compress(b"second"))
    np.save(workdir / "arr.npy", np.arange(4))
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1:] == ["ran", "ran"]
    assert kernel.value("text") == "b'second'" and kernel.value("total") == "6"


def test_writes_through_a_memmap_or_a_log_handler_from_an_earlier_cell(kernel, workdir):
    cells = [
        LOAD,
        (
            "map",
            "import numpy as np\n"
            "m = np.lib.format.open_memmap('m.npy', mode='w+', dtype='f8', shape=(4,))",
        ),
        ("write", "m[0] = 5.0\nm.flush()"),
        (
            "log",
            "import logging\nlog = logging.getLogger('t')\n"
            "log.addHandler(logging.FileHandler('run.log'))",
        ),
        ("emit", "log.warning('hello')"),
    ]
    runs = ok(kernel.run_all(cells))
    found = states(kernel, runs)
    assert found[2] == "uncacheable" and reason(kernel, runs[2]) == "FILE_BYPASSED(path='m.npy')"
    assert found[4] == "uncacheable"
    assert reason(kernel, runs[4]) == "FILE_BYPASSED(path='run.log')"
    kernel.restart()
    ok(kernel.run_all(cells))
    assert float(np.load(workdir / "m.npy")[0]) == 5.0
    assert (workdir / "run.log").read_text().count("hello") == 2


def test_a_symlink_is_replayed(kernel, workdir):
    (workdir / "v1.txt").write_text("v1")
    cells = [
        LOAD,
        ("link", "import os\nos.symlink('v1.txt', 'current')"),
        ("read", "from pathlib import Path\ntext = Path('current').read_text()"),
    ]
    ok(kernel.run_all(cells))
    os.remove(workdir / "current")
    kernel.restart()
    runs = ok(kernel.run_all(cells))
    assert states(kernel, runs)[1] == "restored"
    assert os.readlink(workdir / "current") == "v1.txt"
    assert kernel.value("text") == "'v1'"


def test_a_failing_open_shows_no_incrcell_frame(kernel, workdir):
    cells = [
        LOAD,
        ("def", "def load():\n    return open('nowhere.txt').read()"),
        ("use", "x = load()"),
    ]
    runs = kernel.run_all(cells)
    assert runs[2].status == "error" and runs[2].error["ename"] == "FileNotFoundError"
    text = "\n".join(runs[2].error["traceback"])
    assert "incrcell" not in text and "wrapper" not in text and "hidden" not in text, text
    assert "load()" in text


def test_a_named_pipe_among_the_reads_never_blocks(kernel, workdir):
    os.mkfifo(workdir / "pipe")

    def feed() -> None:
        with open(workdir / "pipe", "w") as pipe:
            pipe.write("through the pipe")

    writer = threading.Thread(target=feed)
    writer.start()
    cells = [LOAD, ("read", "from pathlib import Path\ntext = Path('pipe').read_text()")]
    runs = ok(kernel.run_all(cells))
    writer.join()
    assert kernel.value("text") == "'through the pipe'"
    assert states(kernel, runs)[1] == "uncacheable"
    assert reason(kernel, runs[1]) == "SPECIAL_FILE(path='pipe')"


def test_a_rename_onto_a_directory_that_now_exists_reruns(tmp_path, monkeypatch):
    """A rename's target existed or not before the cell: an input, also when it is now a
    directory (whose content digest says nothing about its existence)."""
    from incrcell.reasons import Code

    from harness import Session

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cells = [
        ("make", "import os\nos.makedirs('runs/r1', exist_ok=True)"),
        ("move", "os.rename('runs', 'archive')"),
    ]
    first = Session(tmp_path / "cache", monkeypatch).run_all(cells)
    assert first["move"].record.state == "ran"
    second = Session(tmp_path / "cache", monkeypatch).run_all(cells)  # `archive` exists now
    assert second["make"].record.state == "restored"
    assert second["move"].record.state == "error"  # as a plain run: the target exists
    assert second["move"].plan.reason == Code.FILE_CHANGED(path="archive")
