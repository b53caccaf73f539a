"""FederatedTrainer inside a real Jupyter kernel (an event loop is already running there)."""

from __future__ import annotations

import os
import sys

import nbformat
from nbclient import NotebookClient

CELLS = [
    "import sys; sys.path.insert(0, {tests!r})",
    "import asyncio\nasyncio.get_running_loop()  # the kernel runs an event loop",
    "from test_trainer import _trainer, _fit\ntrainer = _trainer()",
    "history = _fit(trainer, rounds=3, checkpoint_dir={checkpoint!r}, verbose=1)",
    "assert len(history.history['loss']) == 3\n"
    "assert history.history['recycled_layers'][0] == []\n"
    "print('rounds', len(history.history['loss']))",
]


def test_fit_runs_in_a_jupyter_kernel(tmp_path):
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(c.format(tests=tests, checkpoint=str(tmp_path / "ck")))
        for c in CELLS
    ]
    client = NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "rounds 3" in outputs
    assert sys.executable  # the kernel is this interpreter's ipykernel
