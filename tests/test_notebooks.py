"""The demo notebooks, executed top to bottom with nbclient: cold, warm, and after an edit.

Each notebook runs in a fresh kernel against a fresh cache (``cache_env``),
in a temporary working directory (the quickstart writes a CSV), three times:

1. cold: every cell runs;
2. after a restart, warm: the outputs equal the cold run's, modulo timings,
   the expensive cells are restored, and the run takes a fraction of the time;
3. after a restart with one cell edited (the temperature, the revenue
   period): the edited cell and its dependents run, the rest is restored.

The training runs for ``demos.QUICK_STEPS`` steps here (``INCRCELL_DEMO_STEPS``);
the notebooks committed with outputs come from a full run
(``python notebooks/demos.py``), checked statically below.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "notebooks"))

import demos

pytestmark = [pytest.mark.kernel, pytest.mark.slow]  # nbclient kernels, three runs each

# A line that reports a duration or a speed: its numbers change from run to run.
TIMING_LINE = re.compile(r"tok/s|\d\s?m?s\b")
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")
VALIDATION = re.compile(r"validation loss: ([\d.]+) before training, ([\d.]+) after (\d+) steps")
TRAINING = re.compile(r"step +\d+ +training loss ([\d.]+)")


def normalise(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outputs as a plain run shows them, timings and image bytes blanked.

    incrcell's marker is dropped, adjacent stream chunks merged, numbers on
    timing lines replaced, images compared by presence and type only.
    """
    merged: list[dict[str, Any]] = []
    for o in outputs:
        if o.get("metadata", {}).get("incrcell"):
            continue
        o = {k: copy.deepcopy(v) for k, v in o.items() if k not in ("execution_count", "transient")}
        if (
            o["output_type"] == "stream"
            and merged
            and merged[-1]["output_type"] == "stream"
            and merged[-1]["name"] == o["name"]
        ):
            merged[-1]["text"] += o["text"]
        else:
            merged.append(o)
    for o in merged:
        if o["output_type"] == "stream":
            o["text"] = "\n".join(
                NUMBER.sub("#", line) if TIMING_LINE.search(line) else line
                for line in o["text"].split("\n")
            )
        for mime in list(o.get("data", {})):
            if mime.startswith("image/"):
                o["data"][mime] = "<image>"
    return merged


def stdout(cell: Any) -> str:
    return "".join(
        o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == "stdout"
    )


def is_magic(cell: Any) -> bool:
    """``%incrcell status`` / ``why``: their outputs describe the session, not the data."""
    return cell.source.lstrip().startswith("%incrcell")


def states(nb: Any) -> dict[str, str]:
    return {
        c.id: "restored" if demos.restored(c) else "ran" for c in nb.cells if c.cell_type == "code"
    }


def loss_drop(train_cell: Any) -> tuple[float, float, float, float]:
    """(validation before, after, first training loss, last training loss)."""
    text = stdout(train_cell)
    validation = VALIDATION.search(text)
    steps = [float(x) for x in TRAINING.findall(text)]
    assert validation and len(steps) >= 2, text
    return float(validation.group(1)), float(validation.group(2)), steps[0], steps[-1]


# notebook -> (cells restored on a warm run, the edit, cells that must run after it,
#              cells that must be restored after it)
SCENARIOS = {
    "kv_attention": (
        {
            "data",
            "gradcheck",
            "train",
            "loss-curve",
            "generate-uncached",
            "generate-cached",
            "speed",
        },
        ("temperature", "temperature = 0.8", "temperature = 0.5"),
        {"temperature", "generate-uncached", "generate-cached"},
        {"setup", "data", "gradcheck", "train", "loss-curve", "kv-cache", "generate", "speed"},
    ),
    "quickstart": (
        {"read", "clean", "features", "segments", "revenue", "plot", "report"},
        ("revenue", 'PERIOD = "M"', 'PERIOD = "Q"'),
        {"revenue", "plot"},
        {"read", "clean", "features", "segments", "report"},
    ),
}


@pytest.fixture
def demo_env(cache_env: dict[str, str]) -> dict[str, str]:
    env = {
        **cache_env,
        "INCRCELL_DEMO_STEPS": demos.QUICK_STEPS,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    demos.warm_matplotlib(env)
    return env


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cold_warm_and_edited_runs(
    name: str, tmp_path: Path, demo_env: dict[str, str], record_property: Any
) -> None:
    path = demos.DEMOS[name][0]
    warm_restored, (edit_id, old, new), rerun_after_edit, restored_after_edit = SCENARIOS[name]
    workdir = tmp_path / "work"
    workdir.mkdir()
    nb = nbformat.read(path, as_version=4)
    nbformat.write(nb, workdir / path.name)  # the notebook runs where it is, as in Jupyter

    cold, cold_s = demos.execute(nb, workdir, demo_env)
    assert not demos.errors(cold), demos.errors(cold)
    assert set(states(cold).values()) == {"ran"}

    warm, warm_s = demos.execute(nb, workdir, demo_env)
    assert not demos.errors(warm), demos.errors(warm)
    warm_states = states(warm)
    assert {c for c in warm_restored if warm_states[c] != "restored"} == set()
    for a, b in zip(cold.cells, warm.cells):
        assert a.id == b.id
        if a.cell_type == "code" and not is_magic(a):
            assert normalise(b.outputs) == normalise(a.outputs), a.id
    ratio = warm_s / cold_s
    record_property("cold_seconds", round(cold_s, 2))
    record_property("warm_seconds", round(warm_s, 2))
    print(f"\n{name}: cold {cold_s:.2f} s, warm {warm_s:.2f} s, warm/cold {ratio:.3f}")
    assert ratio < 0.5, (cold_s, warm_s)

    edit = demos.edited(nb, edit_id, old, new)
    after, _ = demos.execute(edit, workdir, demo_env)
    assert not demos.errors(after), demos.errors(after)
    after_states = states(after)
    assert {c: after_states[c] for c in rerun_after_edit} == dict.fromkeys(rerun_after_edit, "ran")
    assert {c: after_states[c] for c in restored_after_edit} == dict.fromkeys(
        restored_after_edit, "restored"
    )

    if name == "kv_attention":
        before, trained, first, last = loss_drop(demos.cell(cold, "train"))
        assert trained < before - 0.5 and last < first - 0.5
        # the restored training is the one that was recorded
        assert stdout(demos.cell(after, "train")) == stdout(demos.cell(cold, "train"))
        # a new temperature, new text; cached and uncached still agree (the cell asserts it)
        assert stdout(demos.cell(after, "generate-cached")) != stdout(
            demos.cell(cold, "generate-cached")
        )
    else:
        why = stdout(demos.cell(after, "why"))
        assert "ran because: source changed" in why, why
        status = stdout(demos.cell(after, "status"))
        assert "excluded with %%incrcell nocache" in status, status


def test_committed_notebooks_match_their_source_and_show_a_full_run() -> None:
    """The .ipynb files are what demos.py writes, saved with the outputs of a full run."""
    for name, (path, cells, _edit) in demos.DEMOS.items():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert [(c.id, c.cell_type, c.source) for c in nb.cells] == [
            (c.id, c.cell_type, c.source.strip("\n")) for c in cells
        ], f"{name}: run notebooks/demos.py"
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code_cells), name
        assert not demos.errors(nb), demos.errors(nb)
        images = [o for c in code_cells for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, name
        assert sum(len(o["data"]["image/png"]) for o in images) < 400_000, name
    kv = nbformat.read(demos.KV_PATH, as_version=4)
    before, trained, first, last = loss_drop(demos.cell(kv, "train"))
    assert trained < 1.0 < before - 2 and last < 1.0 < first - 2, (before, trained, first, last)
    assert "after 600 steps" in stdout(demos.cell(kv, "train"))
    # saved from the run after the temperature edit: training restored, generation ran
    assert demos.restored(demos.cell(kv, "train"))
    assert not demos.restored(demos.cell(kv, "generate-cached"))
    assert "the same" in stdout(demos.cell(kv, "generate-cached"))
