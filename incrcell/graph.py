"""The dependency DAG across the cells executed in a session.

Each executed cell is a node.  When it runs, every name it reads is linked to
the cell that last wrote that name *at that moment*: that is the edge.
Re-executing a cell replaces its node, so the graph always describes the
latest execution of every cell, in execution order.

The graph is used to explain the cache (``%incrcell status`` / ``why``) and to
say which cells an edit invalidates; the cache key itself never depends on
it (keys are built from *contents*, so they stay right even when the graph is
incomplete, e.g. for names written by code the analysis cannot see).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class CellNode:
    """One cell as last executed: what it read, from whom, and what it wrote."""

    cell: str
    reads: frozenset[str]
    writes: frozenset[str]
    producers: dict[str, str] = field(default_factory=dict)  # name read -> cell that wrote it


class CellGraph:
    """Cells in execution order, with read-from edges."""

    def __init__(self) -> None:
        self._nodes: dict[str, CellNode] = {}
        self._last_writer: dict[str, str] = {}

    def record(self, cell: str, reads: Iterable[str], writes: Iterable[str]) -> CellNode:
        """Add (or replace) ``cell`` as the latest execution; returns its node."""
        reads, writes = frozenset(reads), frozenset(writes)
        previous = self._nodes.pop(cell, None)  # re-inserted below: dict order is execution order
        producers = {}
        for name in reads:
            writer = self._last_writer.get(name)
            if writer == cell:  # reads its own earlier result (``n += 1`` run twice)
                writer = previous.producers.get(name) if previous else None
            if writer is not None:
                producers[name] = writer
        node = CellNode(cell, reads, writes, producers)
        self._nodes[cell] = node
        for name in writes:
            self._last_writer[name] = cell
        return node

    def __contains__(self, cell: str) -> bool:
        return cell in self._nodes

    def node(self, cell: str) -> CellNode | None:
        return self._nodes.get(cell)

    def nodes(self) -> list[CellNode]:
        """All nodes in the order their latest executions happened."""
        return list(self._nodes.values())

    def last_writer(self, name: str) -> str | None:
        return self._last_writer.get(name)

    def dependents(self, cell: str) -> list[str]:
        """Cells that read, directly or transitively, what ``cell`` wrote (execution order)."""
        readers: dict[str, set[str]] = {}
        for node in self._nodes.values():
            for producer in node.producers.values():
                readers.setdefault(producer, set()).add(node.cell)
        reached, frontier = set(), [cell]
        while frontier:
            for reader in readers.get(frontier.pop(), ()):
                if reader != cell and reader not in reached:
                    reached.add(reader)
                    frontier.append(reader)
        return [c for c in self._nodes if c in reached]
