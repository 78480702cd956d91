"""Notebook parameters in papermill's convention, for ``incrcell run -p NAME VALUE``.

What users of papermill already know, unchanged:

- ``-p NAME VALUE`` reads VALUE as papermill does: ``True``, ``False``, ``None``,
  an int, a float, else the text itself; ``-f params.yaml`` reads a YAML mapping
  (``-p`` wins over the file for a name in both);
- the values go into a new code cell tagged ``injected-parameters``, after the
  first cell tagged ``parameters`` (or, when a previous run left one, in place
  of the first ``injected-parameters`` cell; at the top when neither exists),
  one ``NAME = literal`` line each under ``# Parameters``.

The injected cell is an ordinary cell: the names it binds are inputs of the
cells that read them, so only those cells (and their dependents) rerun when a
value changes.  Its cell id is kept from the cell it replaces (stable across
runs of a notebook written back in place) or is ``injected-parameters``, so
that its cache lineage, and ``--plan``'s prediction for it, carry over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
INJECTED_ID = "injected-parameters"


class ParameterError(ValueError):
    """A parameter that cannot be used; its text is the one-line error."""


def parse_value(text: str) -> Any:
    """A ``-p`` value read as papermill reads it: bool, None, int, float, else the text."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_file(path: Path) -> dict[str, Any]:
    """The parameters of a YAML file holding one mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must hold a mapping of parameter names to values")
    return data


def collect(files: list[Path], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of ``-f`` files, then ``-p`` pairs (later ones win), checked."""
    parameters: dict[str, Any] = {}
    for path in files:
        parameters.update(load_file(path))
    for name, text in pairs:
        parameters[name] = parse_value(text)
    for name, value in parameters.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ParameterError(f"parameter name {name!r} is not a Python identifier")
        literal(value)  # raises for a value that has no literal
    return parameters


def literal(value: Any) -> str:
    """Python source for ``value``, written as papermill's Python translator writes it."""
    if isinstance(value, str):
        escaped = value.encode("unicode_escape").decode("utf-8").replace('"', r"\"")
        return f'"{escaped}"'
    if value is None or isinstance(value, (bool, int)):
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"float('{value}')"
        return repr(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise ParameterError(
        f"a parameter value of type {type(value).__name__} has no Python literal: {value!r}"
    )


def cell_source(parameters: Mapping[str, Any]) -> str:
    """The source of the injected cell."""
    return "# Parameters\n" + "".join(f"{name} = {literal(v)}\n" for name, v in parameters.items())


def _tagged(nb: nbformat.NotebookNode, tag: str) -> int | None:
    for index, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def inject(nb: nbformat.NotebookNode, parameters: Mapping[str, Any]) -> bool:
    """Put the parameters cell into ``nb`` (in place), as papermill does.

    Returns False when the notebook has no cell tagged ``parameters`` (the
    values then go into a new first cell, and the caller says so).
    """
    cell = nbformat.v4.new_code_cell(source=cell_source(parameters))
    cell.metadata["tags"] = [INJECTED_TAG]
    injected, declared = _tagged(nb, INJECTED_TAG), _tagged(nb, PARAMETERS_TAG)
    ids = {c.get("id") for c in nb.cells}
    if injected is not None:
        previous = nb.cells[injected].get("id")
        cell.id = previous if previous else INJECTED_ID
        nb.cells[injected] = cell
    else:
        if INJECTED_ID not in ids:
            cell.id = INJECTED_ID
        nb.cells.insert(0 if declared is None else declared + 1, cell)
    return declared is not None or injected is not None
