"""Every tutorial notebook runs top to bottom, small, in a real Jupyter kernel.

Each notebook has a code cell tagged ``parameters`` and, in its metadata
(``metadata.keras_luar.ci_parameters``), the values that make it small. As
papermill does, the overrides are injected as a cell right after the
parameters cell; the notebook then runs in a fresh kernel in a temporary
directory, and any error in any cell fails the test.
"""

from __future__ import annotations

import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUTORIALS = os.path.join(ROOT, "tutorials")
NOTEBOOKS = sorted(f for f in os.listdir(TUTORIALS) if f.endswith(".ipynb"))


def _parameters_index(notebook) -> int:
    tagged = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(tagged) == 1, "a tutorial needs exactly one code cell tagged 'parameters'"
    return tagged[0]


def test_the_six_tutorials_are_there():
    numbers = [name.split("_", 1)[0] for name in NOTEBOOKS]
    assert numbers == ["01", "02", "03", "04", "05", "06"], NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_outputs_come_from_an_execution(name):
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    assert code and all(c.get("execution_count") for c in code), "run it before committing"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    counts = [c.execution_count for c in code]
    assert counts == sorted(counts), "cells were executed out of order"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_with_small_parameters(name, tmp_path):
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    overrides = notebook.metadata.get("keras_luar", {}).get("ci_parameters")
    assert overrides, "metadata.keras_luar.ci_parameters must make the notebook small"
    index = _parameters_index(notebook)
    parameters = notebook.cells[index].source
    for key in overrides:
        assert f"{key} =" in parameters, f"{key} is not a parameter of {name}"
    injected = "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    cell = nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(index + 1, cell)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    began = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"{name}: {time.perf_counter() - began:.1f} s")
