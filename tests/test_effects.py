"""Cells that read the clock, entropy, the network, other processes, the keyboard
or the environment (incrcell/effects.py, through the engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from incrcell.effects import find_effects
from incrcell.engine import RESTORE, RUN

from harness import Session, cache_dir  # noqa: F401  (cache_dir is a fixture)


@pytest.fixture
def session(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """``session()``: a fresh engine and namespace on the shared cache (a kernel restart)."""
    return lambda: Session(cache_dir, monkeypatch)


@pytest.mark.parametrize(
    "source, effect",
    [
        ("import time\nt = time.time()", "reads the clock"),
        ("import time as tm\nt = tm.perf_counter()", "reads the clock"),
        ("from time import time\nt = time()", "reads the clock"),
        ("import datetime\nd = datetime.datetime.now()", "reads the clock"),
        ("from datetime import date\nd = date.today()", "reads the clock"),
        ("import pandas as pd\nd = pd.Timestamp.now()", "reads the clock"),
        ("import os\nkey = os.urandom(8)", "fresh entropy"),
        ("import uuid\nu = uuid.uuid4()", "fresh entropy"),
        ("import secrets\nt = secrets.token_hex()", "fresh entropy"),
        ("import numpy as np\nrng = np.random.default_rng()", "fresh entropy"),
        ("import socket\ns = socket.create_connection(('127.0.0.1', 1))", "uses the network"),
        ("import urllib.request\nr = urllib.request.urlopen('http://x')", "uses the network"),
        ("import subprocess\nsubprocess.run(['true'])", "runs other processes"),
        ("import os\nos.system('true')", "runs other processes"),
        ("name = input('name? ')", "keyboard input"),
        ("import os\nos.putenv('X', '1')", "sets environment variables"),
        ("import os\nenv = dict(os.environ)", "reads the environment"),
        ("import os\nv = os.environ[k]", "reads the environment"),
        ("import matplotlib\nmatplotlib.use('agg')", "process-wide settings"),
        ("import helpers\nhelpers.CONFIG['k'] = 0", "object held by module `helpers`"),
        ("import helpers\nhelpers.CONFIG.mode = 0", "object held by module `helpers`"),
        ("x = id(y)", "name this process"),
        ("import os\npid = os.getpid()", "name this process"),
        ("import threading\nt = threading.get_ident()", "name this process"),
    ],
)
def test_effects_are_found(source, effect):
    assert effect in find_effects(source, {}).reason


@pytest.mark.parametrize(
    "source",
    [
        "import numpy as np\nrng = np.random.default_rng(0)",
        "import time\ntime.sleep(0)",
        "import os\np = os.path.join('a', 'b')",
        "x = update(1)",
        "import datetime\nd = datetime.date(2020, 1, 1)",
        "obj.attr = 1\nd['k'] = 2\ndf.loc[0, 'a'] = 3",
        # captured and replayed by interpreter.py instead
        "import os\nos.environ['X'] = '1'",
        "import numpy as np\nnp.set_printoptions(precision=2)",
        "import warnings\nwarnings.filterwarnings('ignore')",
        "import matplotlib.pyplot as plt\nplt.rcParams['figure.dpi'] = 80",
        "import os\nos.chdir('/')",
        "import helpers\nhelpers.LEVEL = 0",
    ],
)
def test_ordinary_code_is_not_flagged(source):
    assert find_effects(source, {}).reason == ""


def test_module_attribute_stores_are_noted_for_the_snapshot():
    import types

    helpers = types.ModuleType("helpers")
    effects = find_effects("helpers.LEVEL = 0", {"helpers": helpers})
    assert effects.reason == "" and effects.stores == {"helpers"}
    assert (
        "object held by module `helpers`"
        in find_effects("helpers.LEVEL[0] = 0", {"helpers": helpers}).reason
    )


def test_a_builtin_that_names_the_process_through_an_earlier_function(session):
    k = session()
    k.run("def key(o):\n    return id(o)", "a")
    plan = k.plan("k = key([])", "b")
    assert (
        plan.action == RUN
        and "calls `key`, which reads values that name this process" in plan.reason
    )


def test_names_imported_in_an_earlier_cell_are_resolved():
    import time
    from datetime import datetime

    assert "reads the clock" in find_effects("t = now()", {"now": time.time}).reason
    assert "reads the clock" in find_effects("d = dt.now()", {"dt": datetime}).reason


def test_literal_environment_reads_are_inputs():
    effects = find_effects(
        "import os\na = os.environ['A']\nb = os.getenv('B', 'x')\nc = os.environ.get('C')", {}
    )
    assert effects.reason == "" and effects.environment == {"A", "B", "C"}


def test_uncacheable_cell_says_why_and_cache_directive_overrides(session):
    k = session()
    plan = k.plan("import time\nstarted = time.time()", "a")
    assert plan.action == RUN and "reads the clock (`time.time`)" in plan.reason
    assert "%%incrcell cache" in plan.reason
    assert (
        k.engine.plan(
            "import time\nstarted = time.time()", k.ns, cell_id="a", directive="cache"
        ).action
        != RUN
    )


def test_a_function_from_an_earlier_cell_that_reads_the_clock(session):
    k = session()
    k.run("import time\ndef stamp():\n    return time.time()", "a")
    plan = k.plan("s = stamp()", "b")
    assert plan.action == RUN and "calls `stamp`, which reads the clock" in plan.reason


def test_environment_variables_are_keyed_by_value(session, monkeypatch):
    cell = "import os\nroot = os.environ.get('INCRCELL_TEST_ROOT')"
    monkeypatch.setenv("INCRCELL_TEST_ROOT", "/a")
    session().run(cell, "a")
    assert session().run(cell, "a").restored
    monkeypatch.setenv("INCRCELL_TEST_ROOT", "/b")
    again = session().run(cell, "a")
    assert again.ran and "os.environ['INCRCELL_TEST_ROOT']" in again.plan.reason
    assert again.plan.action != RESTORE


# -- interpreter state (incrcell/interpreter.py) ---------------------------------------------

import decimal  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from incrcell import interpreter  # noqa: E402

_EVERYTHING = frozenset({"pandas"})


@pytest.fixture
def pristine():
    """``reset()`` puts back the interpreter state as the test found it: a kernel restart
    (the tests share one process); done again at the end."""
    before = interpreter.snapshot(["builtins"], _EVERYTHING)

    def reset() -> None:
        after = interpreter.snapshot(["builtins"], _EVERYTHING)
        interpreter.apply(
            {item: old for item, (old, _) in interpreter.changed(before, after).items()}
        )

    yield reset
    reset()


SETTINGS = [
    (
        "import warnings\nwarnings.filterwarnings('ignore', message='incrcell-test')",
        lambda: any(f[1] is not None and f[1].pattern == "incrcell-test" for f in warnings.filters),
    ),
    ("import decimal\ndecimal.getcontext().prec = 7", lambda: decimal.getcontext().prec == 7),
    ("import sys\nsys.setrecursionlimit(2345)", lambda: sys.getrecursionlimit() == 2345),
    (
        "import pandas as pd\npd.set_option('display.max_rows', 7)",
        lambda: pd.get_option("display.max_rows") == 7,
    ),
    (
        "import matplotlib\nmatplotlib.rcParams['lines.linewidth'] = 7.0",
        lambda: matplotlib.rcParams["lines.linewidth"] == 7.0,
    ),
    (
        "import numpy as np\nnp.set_printoptions(precision=3)",
        lambda: np.get_printoptions()["precision"] == 3,
    ),
    ("import numpy as np\nnp.seterr(divide='ignore')", lambda: np.geterr()["divide"] == "ignore"),
    (
        "import os\nos.environ['INCRCELL_TEST_SET'] = '1'",
        lambda: os.environ.get("INCRCELL_TEST_SET") == "1",
    ),
    (
        "import os\nos.environ.pop('INCRCELL_TEST_GONE')",
        lambda: "INCRCELL_TEST_GONE" not in os.environ,
    ),
    (
        "import sys\nsys.path.append('incrcell-test-dir')",
        lambda: sys.path[-1] == "incrcell-test-dir",
    ),
]


@pytest.mark.parametrize("source, holds", SETTINGS)
def test_a_setting_a_cell_changes_is_set_again_on_a_hit(
    session, pristine, monkeypatch, source, holds
):
    monkeypatch.setenv("INCRCELL_TEST_GONE", "x")
    first = session().run(source, "a")
    assert first.ran and first.record.state == "ran" and holds()
    pristine()
    monkeypatch.setenv("INCRCELL_TEST_GONE", "x")
    assert not holds()
    again = session().run(source, "a")
    assert again.restored and holds()


def test_a_setting_keys_the_cells_after_the_one_that_changed_it(session, pristine):
    reader = "import decimal\nthird = str(decimal.Decimal(1) / 3)"
    first = session().run_all(
        [("a", "import decimal\ndecimal.getcontext().prec = 5"), ("b", reader)]
    )
    assert first["b"].record.state == "ran"
    pristine()
    again = session().run_all(
        [("a", "import decimal\ndecimal.getcontext().prec = 5"), ("b", reader)]
    )
    assert again["a"].restored and again["b"].restored
    pristine()
    k = session()
    edited = k.run_all([("a", "import decimal\ndecimal.getcontext().prec = 6"), ("b", reader)])
    assert edited["b"].ran and "decimal context" in edited["b"].plan.reason
    assert k.ns["third"] == "0.333333"


def test_the_value_a_change_started_from_is_an_input(session, pristine, monkeypatch):
    cell = "import sys\nsys.path.append('incrcell-test-dir')"
    session().run(cell, "a")
    pristine()
    monkeypatch.syspath_prepend("incrcell-elsewhere")
    again = session().run(cell, "a")
    assert again.ran and "sys.path" in again.plan.reason, again.plan.reason
    assert sys.path[-1] == "incrcell-test-dir"


def test_a_module_attribute_set_through_a_function_is_replayed(session, pristine):
    import json

    cells = [
        ("a", "import json\ndef flag(v):\n    json.incrcell_flag = v"),
        ("b", "flag(3)"),
        ("c", "got = json.incrcell_flag + 1"),
    ]
    try:
        session().run_all(cells)
        del json.incrcell_flag
        k = session()
        again = k.run_all(cells)
        assert all(o.restored for o in again.values())
        assert json.incrcell_flag == 3 and k.ns["got"] == 4
    finally:
        vars(json).pop("incrcell_flag", None)


@pytest.mark.parametrize(
    "source, reason",
    [
        (
            "import threading\ndef work():\n    threading.Event().wait(30)\n"
            "threading.Thread(target=work, name='incrcell-worker', daemon=True).start()",
            "starts thread `incrcell-worker`",
        ),
        (
            "import sys\ndef drop(name):\n    sys.modules.pop(name)\ndrop('colorsys')",
            "removes module `colorsys` from sys.modules",
        ),
    ],
)
def test_interpreter_changes_a_restore_cannot_bring_back(session, source, reason):
    import colorsys  # noqa: F401  (in sys.modules before the cell)

    outcome = session().run(source, "a")
    assert outcome.record.state == "uncacheable" and reason in outcome.record.reason


def test_a_cell_that_changes_directory_and_reads_a_file_there(
    session, pristine, tmp_path, monkeypatch
):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_text("inside")
    monkeypatch.chdir(tmp_path)
    cell = "import os\nfrom pathlib import Path\nos.chdir('sub')\ntext = Path('f.txt').read_text()"
    assert session().run(cell, "a").record.state == "ran"
    os.chdir(tmp_path)
    k = session()
    again = k.run(cell, "a")
    assert again.restored and k.ns["text"] == "inside" and os.getcwd() == str(tmp_path / "sub")
    os.chdir(tmp_path)
    (tmp_path / "sub" / "f.txt").write_text("changed")
    k = session()
    changed = k.run(cell, "a")
    assert changed.ran and k.ns["text"] == "changed"
    os.chdir(tmp_path)
    (tmp_path / "sub" / "f.txt").unlink()
    (tmp_path / "sub").rmdir()
    gone = session().run("import os\nos.makedirs('sub', exist_ok=True)\nos.chdir('sub')", "b")
    assert gone.record.state == "ran"
    os.chdir(tmp_path)
    os.rmdir(tmp_path / "sub")
    missing = session().plan("import os\nos.makedirs('sub', exist_ok=True)\nos.chdir('sub')", "b")
    assert missing.action != RESTORE and "no longer exists" in missing.reason
