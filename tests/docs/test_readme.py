"""The README's Python example must run as written (with fewer rounds)."""

from __future__ import annotations

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python_block(after_heading: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index(after_heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_train_your_own_model_example_runs(tmp_path, monkeypatch, capsys):
    code = _python_block("## Train your own Keras model")
    assert "rounds=30" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("rounds=30", "rounds=2"), "README.md", "exec"), {})
    out = capsys.readouterr().out
    comm_cost = re.search(r"^([0-9.]+)$", out, re.M)  # between the progress bars
    assert comm_cost and 0 < float(comm_cost.group(1)) <= 1
    assert re.search(r"^\[('[\w/]+'(, )?)*\]$", out, re.M)  # recycled layer names
    assert (tmp_path / "rounds.csv").exists() and (tmp_path / "ckpt" / "progress.json").exists()
