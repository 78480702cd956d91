from incrcell.graph import CellGraph


def test_edges_point_to_the_last_writer_at_execution_time():
    g = CellGraph()
    g.record("a", reads=[], writes=["x"])
    g.record("b", reads=["x"], writes=["y"])
    g.record("c", reads=[], writes=["x"])  # rewrites x after b read it
    g.record("d", reads=["x", "y"], writes=[])
    assert g.node("b").producers == {"x": "a"}
    assert g.node("d").producers == {"x": "c", "y": "b"}
    assert g.last_writer("x") == "c"


def test_names_nobody_wrote_have_no_producer():
    g = CellGraph()
    node = g.record("a", reads=["undefined", "print"], writes=["z"])
    assert node.producers == {}


def test_dependents_are_transitive_and_in_execution_order():
    g = CellGraph()
    g.record("load", [], ["df"])
    g.record("clean", ["df"], ["df2"])
    g.record("other", [], ["k"])
    g.record("fit", ["df2", "k"], ["model"])
    g.record("plot", ["df"], [])
    assert g.dependents("load") == ["clean", "fit", "plot"]
    assert g.dependents("other") == ["fit"]
    assert g.dependents("plot") == []


def test_reexecution_replaces_the_node_and_keeps_old_readers_reachable():
    g = CellGraph()
    g.record("a", [], ["x"])
    g.record("b", ["x"], ["y"])
    g.record("c", ["y"], [])
    g.record("b", ["x"], ["y"])  # b runs again: now after c in execution order
    assert [n.cell for n in g.nodes()] == ["a", "c", "b"]
    assert set(g.dependents("a")) == {"b", "c"}


def test_a_cell_reading_and_writing_the_same_name_does_not_depend_on_itself():
    g = CellGraph()
    g.record("a", [], ["n"])
    g.record("inc", ["n"], ["n"])
    g.record("inc", ["n"], ["n"])
    # inc's own earlier result is not an edge; the original producer stays one
    assert g.node("inc").producers == {"n": "a"}
    assert g.dependents("inc") == []
    assert g.dependents("a") == ["inc"]
