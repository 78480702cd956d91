"""``incrcell run``, run as a user runs it: a separate process, real kernels, real notebooks.

Each ``incrcell run`` starts one fresh kernel per notebook, so the scenarios
are chained inside a few tests (cold, then warm, then a parameter change...)
rather than spread over many: real kernels are slow on a small machine.  Usage errors,
found before any kernel starts, are checked in this process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from incrcell import cli
from incrcell.run import _forced

ROOT = Path(__file__).parent.parent
TIMEOUT = 600


@pytest.fixture
def env(tmp_path: Path, cache_env: dict[str, str]) -> dict[str, str]:
    """The command's environment: a private cache, key, home; this checkout's incrcell."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        **cache_env,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "PYTHONPATH": str(ROOT),
    }


def incrcell_run(
    *args: str | Path, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "incrcell.cli", "run", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def run_json(*args: str | Path, env: dict[str, str], cwd: Path, status: int = 0) -> dict[str, Any]:
    done = incrcell_run(*args, "--json", env=env, cwd=cwd)
    assert done.returncode == status, done.stderr
    return json.loads(done.stdout)


def states(report: dict[str, Any]) -> dict[int, str]:
    return {cell["index"]: cell["state"] for cell in report["cells"]}


def predictions(report: dict[str, Any]) -> dict[int, str]:
    return {cell["index"]: cell["prediction"] for cell in report["cells"]}


def agrees(plan: dict[str, Any], run: dict[str, Any]) -> None:
    """What --plan said is what the next run did, cell by cell."""
    expected = {i: "restored" if p == "restore" else "ran" for i, p in predictions(plan).items()}
    assert states(run) == expected


def code(source: str, tags: list[str] | None = None) -> Any:
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = tags
    return cell


def write(path: Path, cells: list[Any]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = cells
    nbformat.write(nb, path)
    return path


def outputs(path: Path) -> list[tuple[int | None, list[dict[str, Any]]]]:
    """Per code cell: its execution count and outputs, adjacent stream chunks merged
    (how they are split depends on timing), incrcell's marker kept if there is one."""
    cells = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        merged: list[dict[str, Any]] = []
        for output in cell.outputs:
            output = dict(output)
            last = merged[-1] if merged else None
            if output["output_type"] == "stream" and last and last.get("name") == output["name"]:
                last["text"] += output["text"]
            else:
                merged.append(output)
        cells.append((cell.execution_count, merged))
    return cells


def markers(path: Path) -> list[dict[str, Any]]:
    return [
        output
        for cell in nbformat.read(path, as_version=4).cells
        for output in cell.get("outputs", [])
        if "incrcell" in output.get("metadata", {})
    ]


PIPELINE = [
    code('rows = [{"k": i, "v": i * i} for i in range(40)]\nprint(f"{len(rows)} rows")'),
    code('scale = 1\nlabel = "base"', tags=["parameters"]),
    code('scaled = [r["v"] * scale for r in rows]\nprint("scaled", sum(scaled))'),
    code(
        "from IPython.display import HTML, display\n"
        'display(HTML(f"<b>{len(rows)}</b>"))\n'
        "groups = {r['k'] % 3 for r in rows}\n"
        "sorted(groups)"
    ),
    code(
        'import sys\nprint("checked", file=sys.stderr)\ntitle = f"{label.upper()}: {sum(scaled)}"'
    ),
    code("title"),
]


def test_cold_then_warm_equals_nbconvert_and_the_plan(tmp_path: Path, env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = write(work / "pipeline.ipynb", [nbformat.v4.new_markdown_cell("# P"), *PIPELINE])
    reference = work / "reference.ipynb"
    nbconvert = [sys.executable, "-m", "nbconvert", "--to=notebook", "--execute"]
    done = subprocess.run(
        [*nbconvert, source, "--output", reference.name],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr

    before = source.read_bytes()
    plan = run_json(source, "--plan", env=env, cwd=work)
    assert set(predictions(plan).values()) == {"run"}
    assert {c["code"] for c in plan["cells"]} == {"FIRST_RUN"}
    assert source.read_bytes() == before  # --plan writes nothing

    cold = run_json(source, "-o", work / "cold.ipynb", env=env, cwd=work)
    agrees(plan, cold)
    cell = cold["cells"][0]
    assert set(cell) >= {"index", "id", "state", "reason", "code", "seconds", "saved_seconds"}
    assert {c["code"] for c in cold["cells"]} == {"FIRST_RUN"}
    assert (cell["index"], cell["id"]) == (1, PIPELINE[0].id)
    assert cold["totals"]["ran"] == len(PIPELINE) and cold["totals"]["restored"] == 0
    assert outputs(work / "cold.ipynb") == outputs(reference)

    plan = run_json(source, "--plan", env=env, cwd=work)
    assert set(predictions(plan).values()) == {"restore"}
    warm = run_json(source, "-o", work / "warm.ipynb", env=env, cwd=work)
    agrees(plan, warm)
    assert warm["totals"]["restored"] == len(PIPELINE)
    assert all(c["seconds"] > 0 and c["saved_seconds"] >= 0 for c in warm["cells"])
    # restored cells carry a plain run's outputs and this run's counts, and no marker
    assert outputs(work / "warm.ipynb") == outputs(reference)
    assert markers(work / "warm.ipynb") == []
    # the source notebook was never written (-o), and --plan wrote nothing either
    assert all(not c.get("outputs") for c in nbformat.read(source, as_version=4).cells[1:])

    # the default is --inplace, and the text report ends with the one-line summary
    done = incrcell_run(source, "--markers", env=env, cwd=work)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"{re.escape(str(source))}: 6 restored, 0 ran, \d+\.\d s saved", summary)
    assert len(markers(source)) == len(PIPELINE)  # asked for: kept
    kept = [
        (count, [o for o in outs if "incrcell" not in o.get("metadata", {})])
        for count, outs in outputs(source)
    ]
    assert kept == outputs(reference)


def test_parameters_rerun_only_their_dependents_and_force_reruns_a_cell_and_its_dependents(
    tmp_path: Path, env: dict[str, str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    notebook = write(work / "sweep.ipynb", list(PIPELINE))
    run_json(notebook, env=env, cwd=work)  # cold, in place

    plan = run_json(notebook, "-p", "scale", "3", "--plan", env=env, cwd=work)
    run = run_json(notebook, "-p", "scale", "3", env=env, cwd=work)
    agrees(plan, run)
    # 1 rows, 2 parameters, 3 injected (new), 4 scaled, 5 display, 6 title, 7 `title`
    assert states(run) == {
        1: "restored",
        2: "restored",
        3: "ran",
        4: "ran",
        5: "restored",
        6: "ran",
        7: "ran",
    }
    nb = nbformat.read(notebook, as_version=4)
    injected = nb.cells[2]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert injected.source == "# Parameters\nscale = 3\n"
    assert nb.cells[6].outputs[0]["data"]["text/plain"] == repr(f"BASE: {3 * 20540}")

    # the same value again (the injected cell is replaced, keeping its id): all restored
    params = work / "params.yaml"
    params.write_text("scale: 3\n")
    again = run_json(notebook, "-f", params, env=env, cwd=work)
    assert set(states(again).values()) == {"restored"}
    assert (
        len(
            [
                c
                for c in nbformat.read(notebook, as_version=4).cells
                if c.source.startswith("# Parameters")
            ]
        )
        == 1
    )

    # --force by cell id: that cell and every cell reading from it, directly or not
    forced = run_json(notebook, "-f", params, "--force", PIPELINE[0].id, env=env, cwd=work)
    assert states(forced) == {
        1: "ran",
        2: "restored",
        3: "restored",
        4: "ran",
        5: "ran",
        6: "ran",
        7: "ran",
    }
    assert forced["cells"][0]["reason"] == "forced with %%incrcell rerun"
    assert nbformat.read(notebook, as_version=4).cells[0].source == PIPELINE[0].source


def test_a_failing_cell_exits_1_and_names_it(tmp_path: Path, env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    failing = write(
        work / "failing.ipynb",
        [
            code("x = 1\nprint('x is set')"),
            code("y = x / 0"),
            code("z = x + 1\nz"),
            code("import time\ntime.sleep(600)"),
        ],
    )
    write(work / "fine.ipynb", [code("a = 2\na * 21")])
    done = incrcell_run(work, env=env, cwd=tmp_path)  # a directory: both notebooks
    assert done.returncode == 1
    assert "failing.ipynb: cell 2 `y = x / 0` raised ZeroDivisionError: division by zero" in (
        done.stderr
    )
    assert "----> 1 y = x / 0" in done.stderr  # its traceback, without colours
    assert "\x1b[" not in done.stderr
    assert "failing.ipynb: 0 restored, 1 ran, 1 failed, 2 not run, 0.0 s saved" in done.stdout
    assert "fine.ipynb: 0 restored, 1 ran, 0.0 s saved" in done.stdout  # the next one ran
    # written like papermill: the error under its cell, nothing under the cells after it
    cells = nbformat.read(failing, as_version=4).cells
    assert cells[1].outputs[0]["ename"] == "ZeroDivisionError"
    assert [c.outputs for c in cells[2:]] == [[], []]
    assert [c.execution_count for c in cells] == [1, 2, None, None]

    report = run_json(failing, "--allow-errors", "--timeout", "10", env=env, cwd=work, status=1)
    assert states(report) == {1: "restored", 2: "error", 3: "ran", 4: "error"}
    errors = report["notebooks"][0]["errors"]
    assert [e["index"] for e in errors] == [2, 4]
    assert "--timeout" in report["cells"][3]["reason"]
    assert nbformat.read(failing, as_version=4).cells[2].outputs[0]["data"]["text/plain"] == "2"


def test_a_notebook_that_loads_incrcell_itself(tmp_path: Path, env: dict[str, str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    notebook = write(
        work / "own.ipynb",
        [code("%load_ext incrcell"), code("data = list(range(10))\nprint(sum(data))")],
    )
    cache = Path(env["INCRCELL_CACHE_DIR"])
    plain = run_json(notebook, "--no-cache", env=env, cwd=work)
    assert states(plain) == {1: "ran", 2: "ran"}
    assert not list(cache.glob("v*/entries/*/*"))  # --no-cache: nothing written

    cold = run_json(notebook, env=env, cwd=work)
    assert states(cold) == {1: "uncacheable", 2: "ran"}
    warm = run_json(notebook, env=env, cwd=work)
    assert states(warm) == {1: "uncacheable", 2: "restored"}
    cells = nbformat.read(notebook, as_version=4).cells
    assert cells[0].outputs == []  # loaded once: no "already loaded" message
    assert [c.execution_count for c in cells] == [1, 2]
    assert cells[1].outputs[0]["text"] == "45\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ipynb"], "no such notebook: missing.ipynb"),
        (["nb.ipynb", "--kernel", "no-such-kernel"], "no kernel named 'no-such-kernel'"),
        (["nb.ipynb", "-p", "1x", "2"], "'1x' is not a Python identifier"),
        (["nb.ipynb", "-f", "bad.yaml"], "must hold a mapping"),
        (["nb.ipynb", "--force", "9"], "has no code cell 9 (it has 1)"),
        (["nb.ipynb", "--force", "nope"], "has no code cell with id 'nope'"),
        (["nb.ipynb", "nb.ipynb", "-o", "out.ipynb"], "-o names one output notebook"),
        (["nb.ipynb", "--plan", "--no-cache"], "--no-cache runs every cell plainly"),
        (["nb.ipynb", "-o", "nowhere/out.ipynb"], "no such directory for -o: nowhere"),
        (["nb.ipynb", "--timeout", "-1"], "expected a number of seconds"),
        (["nb.ipynb", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """In this process, with the command's environment: usage errors are found before any
    kernel starts or anything is written (a process of its own would spend seconds importing
    nbformat for each case, the command's code being the same)."""
    write(tmp_path / "nb.ipynb", [code("x = 1")])
    (tmp_path / "bad.yaml").write_text("- a list\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    try:
        status = cli.main(["run", *args])
    except SystemExit as exit:  # argparse's own errors
        status = exit.code
    stdout, stderr = capsys.readouterr()
    assert status == 2
    assert message in stderr
    assert stdout == ""
    if "--frobnicate" not in args and "--timeout" not in args:  # argparse adds its usage
        assert len(stderr.strip().splitlines()) == 1, stderr


def test_on_a_terminal_one_line_per_cell_then_the_summary(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The live display (stdout a terminal): each cell's line with its state, in order."""
    import pty

    notebook = write(
        tmp_path / "live.ipynb",
        [code("a = 1"), code("b = a + 1\nprint(b)"), code("c = b * 2\nc")],
    )
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "incrcell.cli", "run", notebook, "--force", "2"],
        env={**env, "COLUMNS": "200", "TERM": "xterm"},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=TIMEOUT) == 0
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    rows = [line for line in lines if re.match(r"\d+\s+(ran|restored)\s", line)]
    assert [row.split()[:2] for row in rows] == [["1", "ran"], ["2", "ran"], ["3", "ran"]]
    assert "forced with %%incrcell rerun" in rows[1]
    assert lines[-1] == f"{notebook}: 0 restored, 3 ran, 0.0 s saved"


def test_a_kernel_that_cannot_load_incrcell_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    """--kernel NAME picks the kernel; one in which incrcell cannot be imported is a one-line
    error, and the notebook is not written."""
    spec = tmp_path / "jupyter" / "kernels" / "without-incrcell"
    spec.mkdir(parents=True)
    launch = (
        "import sys; sys.modules['incrcell'] = None; "
        "from ipykernel.kernelapp import launch_new_instance; launch_new_instance()"
    )
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", launch, "-f", "{connection_file}"],
                "display_name": "Python without incrcell",
                "language": "python",
            }
        )
    )
    notebook = write(tmp_path / "nb.ipynb", [code("x = 1\nx")])
    before = notebook.read_bytes()
    done = incrcell_run(
        notebook,
        "--kernel",
        "without-incrcell",
        env={**env, "JUPYTER_PATH": str(tmp_path / "jupyter")},
        cwd=tmp_path,
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if not line.startswith("[IPKernelApp]")]
    assert len(lines) == 1
    assert lines[0].startswith(
        f"incrcell run: {notebook}: kernel 'without-incrcell' cannot load incrcell: "
    )
    assert notebook.read_bytes() == before


def test_force_takes_an_all_digit_cell_id_as_that_id() -> None:
    # nbformat draws cell ids at random: one in ~200 is all digits ("26276705")
    cells = [
        nbformat.v4.new_code_cell("a = 1", id="first"),
        nbformat.v4.new_code_cell("b = a", id="26276705"),
    ]
    assert _forced(["26276705", "1"], cells, Path("nb.ipynb")) == ["26276705", "first"]
