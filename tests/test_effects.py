"""Cells that read the clock, entropy, the network, other processes, the keyboard
or the environment (incrcell/effects.py, through the engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from incrcell.effects import find_effects
from incrcell.engine import RESTORE, RUN
from incrcell.reasons import Code

from harness import Session, cache_dir  # noqa: F401  (cache_dir is a fixture)


@pytest.fixture
def session(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """``session()``: a fresh engine and namespace on the shared cache (a kernel restart)."""
    return lambda: Session(cache_dir, monkeypatch)


@pytest.mark.parametrize(
    "source, effect",
    [
        ("import time\nt = time.time()", "clock"),
        ("import time as tm\nt = tm.perf_counter()", "clock"),
        ("from time import time\nt = time()", "clock"),
        ("import datetime\nd = datetime.datetime.now()", "clock"),
        ("from datetime import date\nd = date.today()", "clock"),
        ("import pandas as pd\nd = pd.Timestamp.now()", "clock"),
        ("import os\nkey = os.urandom(8)", "entropy"),
        ("import uuid\nu = uuid.uuid4()", "entropy"),
        ("import secrets\nt = secrets.token_hex()", "entropy"),
        ("import numpy as np\nrng = np.random.default_rng()", "entropy"),
        ("import socket\ns = socket.create_connection(('127.0.0.1', 1))", "network"),
        ("import urllib.request\nr = urllib.request.urlopen('http://x')", "network"),
        ("import subprocess\nsubprocess.run(['true'])", "processes"),
        ("import os\nos.system('true')", "processes"),
        ("name = input('name? ')", "keyboard"),
        ("import os\nos.putenv('X', '1')", "setenv"),
        ("import os\nenv = dict(os.environ)", Code.ENVIRONMENT_DYNAMIC()),
        ("import os\nv = os.environ[k]", Code.ENVIRONMENT_DYNAMIC()),
        ("import matplotlib\nmatplotlib.use('agg')", "settings"),
        ("import helpers\nhelpers.CONFIG['k'] = 0", Code.MODULE_OBJECT_CHANGED(module="helpers")),
        ("import helpers\nhelpers.CONFIG.mode = 0", Code.MODULE_OBJECT_CHANGED(module="helpers")),
        ("x = id(y)", "process identity"),
        ("import os\npid = os.getpid()", "process identity"),
        ("import threading\nt = threading.get_ident()", "process identity"),
    ],
)
def test_effects_are_found(source, effect):
    """``effect``: the kind of an EFFECT (reasons.EFFECTS), or the whole reason."""
    reason = find_effects(source, {}).reason
    if isinstance(effect, str):
        assert reason is not None and reason.code is Code.EFFECT, reason
        assert reason.details["kind"] == effect
    else:
        assert reason == effect


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
    assert find_effects(source, {}).reason is None


def test_module_attribute_stores_are_noted_for_the_snapshot():
    import types

    helpers = types.ModuleType("helpers")
    effects = find_effects("helpers.LEVEL = 0", {"helpers": helpers})
    assert effects.reason is None and effects.stores == {"helpers"}
    assert find_effects(
        "helpers.LEVEL[0] = 0", {"helpers": helpers}
    ).reason == Code.MODULE_OBJECT_CHANGED(module="helpers")


def test_a_builtin_that_names_the_process_through_an_earlier_function(session):
    k = session()
    k.run("def key(o):\n    return id(o)", "a")
    plan = k.plan("k = key([])", "b")
    assert plan.action == RUN
    assert plan.reason == Code.VARIES(Code.EFFECT_CALLED(function="key", kind="process identity"))


def test_names_imported_in_an_earlier_cell_are_resolved():
    import time
    from datetime import datetime

    assert find_effects("t = now()", {"now": time.time}).reason == Code.EFFECT(
        kind="clock", call="time.time"
    )
    assert find_effects("d = dt.now()", {"dt": datetime}).reason == Code.EFFECT(
        kind="clock", call="datetime.datetime.now"
    )


def test_literal_environment_reads_are_inputs():
    effects = find_effects(
        "import os\na = os.environ['A']\nb = os.getenv('B', 'x')\nc = os.environ.get('C')", {}
    )
    assert effects.reason is None and effects.environment == {"A", "B", "C"}


def test_uncacheable_cell_says_why_and_cache_directive_overrides(session):
    k = session()
    plan = k.plan("import time\nstarted = time.time()", "a")
    assert plan.action == RUN
    assert plan.reason == Code.VARIES(Code.EFFECT(kind="clock", call="time.time"))
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
    assert plan.action == RUN
    assert plan.reason == Code.VARIES(Code.EFFECT_CALLED(function="stamp", kind="clock"))


def test_environment_variables_are_keyed_by_value(session, monkeypatch):
    cell = "import os\nroot = os.environ.get('INCRCELL_TEST_ROOT')"
    monkeypatch.setenv("INCRCELL_TEST_ROOT", "/a")
    session().run(cell, "a")
    assert session().run(cell, "a").restored
    monkeypatch.setenv("INCRCELL_TEST_ROOT", "/b")
    again = session().run(cell, "a")
    assert again.ran and again.plan.reason == Code.INPUT_CHANGED(
        name="os.environ['INCRCELL_TEST_ROOT']"
    )
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
    assert edited["b"].ran and Code.INPUT_CHANGED in edited["b"].plan.reason
    assert "decimal context" in edited["b"].plan.reason.find(Code.INPUT_CHANGED).details["name"]
    assert k.ns["third"] == "0.333333"


def test_the_value_a_change_started_from_is_an_input(session, pristine, monkeypatch):
    cell = "import sys\nsys.path.append('incrcell-test-dir')"
    session().run(cell, "a")
    pristine()
    monkeypatch.syspath_prepend("incrcell-elsewhere")
    again = session().run(cell, "a")
    assert again.ran and again.plan.reason == Code.INTERPRETER_STATE(item="sys.path")
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
            Code.THREAD_RUNNING(thread="incrcell-worker"),
        ),
        (
            "import sys\ndef drop(name):\n    sys.modules.pop(name)\ndrop('colorsys')",
            Code.MODULE_REMOVED(module="colorsys"),
        ),
    ],
)
def test_interpreter_changes_a_restore_cannot_bring_back(session, source, reason):
    import colorsys  # noqa: F401  (in sys.modules before the cell)

    outcome = session().run(source, "a")
    assert outcome.record.state == "uncacheable" and outcome.record.reason == reason


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
    assert missing.action != RESTORE and missing.reason == Code.CWD_GONE(
        directory=str(tmp_path / "sub")
    )
