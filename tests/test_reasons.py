"""Reasons are values (incrcell/reasons.py): the words users read for the common ones stay
as they were, codes and details compare, and states and actions read as their old strings.

Logic tests elsewhere assert codes; these few pin the wording, so that a rewording is a
decision, never an accident."""

from __future__ import annotations

import json

import pytest

from incrcell.explain import explain_miss
from incrcell.keying import UNBOUND
from incrcell.reasons import Action, Code, Reason, State, code, text


@pytest.mark.parametrize(
    "reason, words",
    [
        (Code.FIRST_RUN(), "first run: nothing recorded for this cell yet"),
        (Code.SOURCE_CHANGED(), "source changed"),
        (Code.INPUT_CHANGED(name="x"), "input `x` changed"),
        (Code.NEW_INPUT(name="y"), "new input `y`"),
        (Code.INPUT_UNDEFINED(name="z"), "input `z` is not defined"),
        (
            Code.SEVERAL(Code.SOURCE_CHANGED(), Code.NEW_INPUT(name="z")),
            "source changed; new input `z`",
        ),
        (
            Code.PACKAGE_CHANGED(name="numpy", before="numpy==1.0", after="numpy==2.0"),
            "package `numpy` changed (numpy==1.0 -> numpy==2.0)",
        ),
        (Code.FILE_CHANGED(path="data.csv"), "file `data.csv` changed"),
        (Code.ENTRY_MISSING(), "its cache entry was cleared or could not be read"),
        (
            Code.VARIES(Code.EFFECT(kind="clock", call="time.time")),
            "reads the clock (`time.time`): its results can change from run to run "
            "(start it with %%incrcell cache to cache it anyway)",
        ),
        (
            Code.VARIES(Code.EFFECT_CALLED(function="stamp", kind="clock")),
            "calls `stamp`, which reads the clock: its results can change from run to run "
            "(start it with %%incrcell cache to cache it anyway)",
        ),
        (
            Code.UNHASHABLE_INPUT(name="lock", type="lock", detail="a lock"),
            "input `lock` (lock) cannot be hashed: a lock",
        ),
        (
            Code.MAGIC(),
            "uses IPython magics or shell commands (% or !): their side effects cannot be captured",
        ),
        (Code.RAISED(), "raised an exception: nothing was cached"),
        (
            Code.UPSTREAM_RUNS(name="b", upstream="cell 2 `b = a + 2`"),
            "input `b` comes from cell 2 `b = a + 2`, which will run",
        ),
        (Code.UPSTREAM_STALE(upstream="cell 2 `b = a + 2`"), "cell 2 `b = a + 2` is stale"),
        (
            Code.INTERACTIVITY(value="all"),
            "ast_node_interactivity is 'all': only 'last_expr' outputs are replayed",
        ),
    ],
    ids=lambda v: v.code.value if isinstance(v, Reason) else None,
)
def test_common_reasons_read_as_they_always_did(reason: Reason, words: str):
    assert str(reason) == words == text(reason) == f"{reason}"


def test_every_code_has_words():
    for member in Code:
        details = dict.fromkeys(
            ("name", "path", "call", "function", "module", "item", "detail", "what", "type",
             "before", "after", "cwd", "directory", "pattern", "thread", "value", "upstream",
             "how", "url"),
            "x",
        )  # fmt: skip
        rendered = str(member(Code.FIRST_RUN(), **details, kind="clock"))
        assert rendered and "{" not in rendered, member


def test_reasons_compare_by_code_and_details_and_hold_their_causes():
    miss = explain_miss(
        {"source": "a", "inputs": {"x": "1", "y": "2"}},
        {"source": "b", "inputs": {"x": "1", "y": UNBOUND}},
    )
    assert miss == Code.SEVERAL(Code.SOURCE_CHANGED(), Code.INPUT_UNDEFINED(name="y"))
    assert Code.INPUT_UNDEFINED(name="y") in miss and Code.SOURCE_CHANGED in miss
    assert Code.INPUT_CHANGED not in miss and Code.INPUT_UNDEFINED(name="x") not in miss
    assert miss.find(Code.INPUT_UNDEFINED) == Code.INPUT_UNDEFINED(name="y")
    assert miss.codes() == [Code.SEVERAL, Code.SOURCE_CHANGED, Code.INPUT_UNDEFINED]
    assert repr(miss) == "SEVERAL(SOURCE_CHANGED(), INPUT_UNDEFINED(name='y'))"
    with pytest.raises(TypeError):
        assert "source changed" in miss  # prose is for people: tests ask for codes


def test_states_actions_and_codes_read_as_their_old_strings():
    assert [f"{s}" for s in State] == ["restored", "ran", "uncacheable", "error"]
    assert [str(a) for a in Action] == ["restore", "record", "run"]
    assert f"{State.RAN:<6}|" == "ran   |"
    assert State.RESTORED == "restored" and {"restored": 1}[State.RESTORED] == 1
    assert json.dumps({State.RAN: Action.RUN, "code": Code.FIRST_RUN}) == (
        '{"ran": "run", "code": "FIRST_RUN"}'
    )
    assert (code(None), text(None)) == ("", "")
    assert code(Code.INPUT_CHANGED(name="k")) == "INPUT_CHANGED"
