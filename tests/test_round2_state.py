"""Interpreter state outside the namespace, through real kernels (issue 9, round 2).

Each test runs a notebook, restarts the kernel and runs it again (sometimes
with one cell edited), then checks both which cells were restored and the
values a plain Run All would give.
"""

from __future__ import annotations

from pathlib import Path

from kernel import LOAD, Kernel, ok


def restored(executions) -> list[bool]:
    return [e.restored for e in executions]


def twice(kernel: Kernel, cells, edited=None):
    """Run ``cells``, restart, run ``edited`` (default: the same cells); the second run."""
    ok(kernel.run_all(cells))
    kernel.restart()
    second = kernel.run_all(edited or cells)
    ok(second)
    return second


def status(kernel: Kernel) -> str:
    return kernel.run("%incrcell status").stdout


def test_sys_path_insert_is_replayed_so_a_later_import_works(kernel: Kernel, workdir: Path):
    (workdir / "vendor").mkdir()
    (workdir / "vendor" / "vendored_mod.py").write_text("VALUE = 41\n")
    cells = [
        LOAD,
        ("path", "import sys\nsys.path.insert(0, 'vendor')"),
        ("use", "import vendored_mod\nv = vendored_mod.VALUE + 1"),
    ]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True]
    assert kernel.value("sys.path[0]") == "'vendor'"
    assert kernel.value("v") == "42"
    later = kernel.run("import vendored_mod as again\nagain.VALUE", "later")
    assert later.status == "ok" and later.result == "41"


def test_editing_the_cell_that_sets_a_module_attribute_reruns_its_readers(
    kernel: Kernel, workdir: Path
):
    (workdir / "settings.py").write_text("LEVEL = 1\n")
    (workdir / "helpers.py").write_text(
        "import settings\n\ndef level():\n    return settings.LEVEL * 10\n"
    )
    cells = [
        LOAD,
        ("imp", "import settings, helpers"),
        ("set", "settings.LEVEL = 2"),
        ("read", "x = helpers.level()"),
        ("direct", "y = settings.LEVEL"),
    ]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True, True, True]
    assert kernel.value("(settings.LEVEL, x, y)") == "(2, 20, 2)"

    kernel.restart()
    edited = [(cid, "settings.LEVEL = 3" if cid == "set" else src) for cid, src in cells]
    third = kernel.run_all(edited)
    ok(third)
    assert restored(third) == [False, True, False, False, False]
    assert kernel.value("(settings.LEVEL, x, y)") == "(3, 30, 3)"


def test_an_attribute_set_on_a_library_module_is_replayed_and_keyed(kernel: Kernel):
    cells = [LOAD, ("flag", "import json\njson.flag = 1"), ("read", "f = json.flag + 1")]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True]
    assert kernel.value("(json.flag, f)") == "(1, 2)"
    kernel.restart()
    edited = [cells[0], ("flag", "import json\njson.flag = 5"), cells[2]]
    third = kernel.run_all(edited)
    ok(third)
    assert restored(third) == [False, False, False]
    assert kernel.value("(json.flag, f)") == "(5, 6)"


def test_a_builtin_set_by_a_cell_is_replayed_and_keys_its_readers(kernel: Kernel):
    cells = [LOAD, ("b", "import builtins\nbuiltins.x = 1"), ("r", "y = x + 1")]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True]
    assert kernel.value("(x, y)") == "(1, 2)"
    kernel.restart()
    third = kernel.run_all([cells[0], ("b", "import builtins\nbuiltins.x = 5"), cells[2]])
    ok(third)
    assert restored(third) == [False, False, False]
    assert kernel.value("(x, y)") == "(5, 6)"


def test_environment_set_in_one_cell_and_read_in_another(kernel: Kernel):
    cells = [
        LOAD,
        ("env", "import os\nos.environ['INCRCELL_MODE'] = 'fast'"),
        ("read", "import os\nmode = os.environ['INCRCELL_MODE']"),
    ]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True]
    assert kernel.value("(os.environ['INCRCELL_MODE'], mode)") == "('fast', 'fast')"
    kernel.restart()
    third = kernel.run_all(
        [cells[0], ("env", "import os\nos.environ['INCRCELL_MODE'] = 'slow'"), cells[2]]
    )
    ok(third)
    assert restored(third) == [False, False, False]
    assert kernel.value("mode") == "'slow'"


def test_print_options_set_inside_a_helper_function(kernel: Kernel):
    cells = [
        LOAD,
        ("def", "import numpy as np\ndef setup():\n    np.set_printoptions(precision=2)"),
        ("call", "setup()"),
        ("show", "print(np.array([1 / 3]))"),
    ]
    first = kernel.run_all(cells)
    ok(first)
    assert first[3].stdout == "[0.33]\n"
    kernel.restart()
    second = kernel.run_all(cells)
    ok(second)
    assert restored(second) == [False, True, True, True]
    assert kernel.run("print(np.array([1 / 3]))", "after").stdout == "[0.33]\n"
    kernel.restart()
    edited = [(cid, src.replace("precision=2", "precision=4")) for cid, src in cells]
    third = kernel.run_all(edited)
    ok(third)
    assert restored(third) == [False, False, False, False]
    assert third[3].stdout == "[0.3333]\n"


def test_working_directory_changed_by_a_cell_is_replayed(kernel: Kernel, workdir: Path):
    (workdir / "sub").mkdir()
    (workdir / "sub" / "f.txt").write_text("inside")
    cells = [
        LOAD,
        ("cd", "import os\nos.chdir('sub')"),
        ("read", "from pathlib import Path\ntext = Path('f.txt').read_text()"),
    ]
    second = twice(kernel, cells)
    assert restored(second) == [False, True, True]
    assert kernel.value("os.getcwd()") == repr(str(workdir / "sub"))
    assert kernel.value("text") == "'inside'"


def test_the_clock_read_inside_a_local_module_function(kernel: Kernel, workdir: Path):
    (workdir / "clock.py").write_text("import time\n\ndef stamp():\n    return time.time()\n")
    (workdir / "wrapper.py").write_text("import clock\n\ndef go():\n    return clock.stamp()\n")
    cells = [
        LOAD,
        ("imp", "import wrapper"),
        ("use", "t = wrapper.go()"),
        ("from", "from clock import stamp"),
        ("use2", "t2 = stamp()"),
    ]
    ok(kernel.run_all(cells))
    text = status(kernel)
    assert "calls `stamp`, which reads the clock" in text
    before = kernel.value("(t, t2)")
    kernel.restart()
    second = kernel.run_all(cells)
    ok(second)
    assert restored(second) == [False, True, False, True, False]
    assert kernel.value("(t, t2)") != before


def test_the_clock_read_by_a_local_module_the_same_cell_imports_first(
    kernel: Kernel, workdir: Path
):
    (workdir / "clock.py").write_text("import time\n\ndef stamp():\n    return time.time()\n")
    cells = [LOAD, ("use", "import clock\nt = clock.stamp()")]
    ok(kernel.run_all(cells))
    assert "calls `stamp`, which reads the clock" in status(kernel)
    before = kernel.value("t")
    kernel.restart()
    assert restored(kernel.run_all(cells)) == [False, False]
    assert kernel.value("t") != before


def test_values_that_name_this_process_are_not_cached(kernel: Kernel):
    cells = [LOAD, ("pid", "import os\npid = os.getpid()"), ("ident", "i = id(object())")]
    ok(kernel.run_all(cells))
    assert status(kernel).count("reads values that name this process") == 2
    kernel.restart()
    second = kernel.run_all(cells)
    ok(second)
    assert restored(second) == [False, False, False]
    assert kernel.value("pid == os.getpid()") == "True"


def test_values_that_name_this_process_can_be_cached_on_purpose(kernel: Kernel):
    cells = [LOAD, ("pid", "%%incrcell cache\nimport os\npid = os.getpid()")]
    second = twice(kernel, cells)
    assert restored(second) == [False, True]


def test_a_thread_still_running_when_the_cell_ends(kernel: Kernel):
    cells = [
        LOAD,
        (
            "thread",
            "import threading, time\nresults = []\n"
            "threading.Thread(target=lambda: (time.sleep(60), results.append(1)),\n"
            "                 name='worker', daemon=True).start()",
        ),
    ]
    ok(kernel.run_all(cells))
    assert "starts thread `worker`, still running" in status(kernel)
    kernel.restart()
    assert restored(kernel.run_all(cells)) == [False, False]


def test_a_module_planted_in_sys_modules_by_hand(kernel: Kernel, workdir: Path):
    # through a local module's function, where no static check sees it
    (workdir / "planter.py").write_text(
        "import sys, types\n\ndef plant(name):\n    sys.modules[name] = types.ModuleType(name)\n"
    )
    # a package whose import makes a submodule without a spec, held as its attribute (as
    # pybind11 extensions do: scipy's ``_highspy._core.cb``): importing it again makes it
    (workdir / "native").mkdir()
    (workdir / "native" / "__init__.py").write_text(
        "import sys, types\ncb = types.ModuleType('native.cb')\nsys.modules['native.cb'] = cb\n"
    )
    cells = [
        LOAD,
        ("def", "from planter import plant"),
        ("plant", "plant('planted')"),
        ("use", "import planted\nname = planted.__name__"),
        ("native", "import native"),
        ("sub", "import native.cb\nsub = native.cb.__name__"),
        # planted by hand beside an import: not the package's doing
        ("beside", "import json.tool\nplant('json.tool.extra')"),
    ]
    ok(kernel.run_all(cells))
    assert "puts `planted` into sys.modules by hand" in status(kernel)
    kernel.restart()
    second = kernel.run_all(cells)
    ok(second)
    assert restored(second) == [False, True, False, False, True, True, False]
    assert kernel.value("name, sub") == "('planted', 'native.cb')"
