"""The `keras-luar` command line: quickstart and run output, argument errors."""

from __future__ import annotations

import csv
import json
import re

import pytest

from keras_luar import cli

SMALL = ["--rounds", "2", "--num-clients", "6", "--clients-per-round", "3", "--local-steps", "2"]
ROW = re.compile(
    r"^\s+(\d+)\s+(FedAvg|FedLUAR)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.+)$", re.M
)


def test_quickstart_prints_rounds_and_a_consistent_comparison(capsys):
    assert cli.main(["quickstart", *SMALL, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    rows = ROW.findall(out)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (s, m, r) for s in "01" for m in ("FedAvg", "FedLUAR") for r in "12"
    ]
    for seed in "01":
        fedavg = [r for r in rows if r[0] == seed and r[1] == "FedAvg"]
        fedluar = [r for r in rows if r[0] == seed and r[1] == "FedLUAR"]
        assert [r[5] for r in fedavg] == ["1.00", "1.00"]
        assert fedluar[0][5] == "1.00" and fedluar[0][6] == "-"  # round 0 sends everything
        assert fedluar[0][3:5] == fedavg[0][3:5]  # identical first round
        assert len(fedluar[1][6].split(", ")) == 2  # δ = 2 layers recycled in round 2
    final = dict(re.findall(r"^(FedAvg|FedLUAR)\s+[\d.]+ ± [\d.]+\s+([\d.]+)", out, re.M))
    assert float(final["FedAvg"]) == 1.0
    # Cumulative cost over 2 rounds, averaged over the seeds = mean of (1 + f2) / 2.
    second = [float(r[5]) for r in rows if r[1] == "FedLUAR" and r[2] == "2"]
    expected = sum((1 + f) / 2 for f in second) / 2
    assert float(final["FedLUAR"]) == pytest.approx(expected, abs=0.006)
    assert "mean over 2 seeds" in out


def test_run_writes_history_files_and_resumes(tmp_path, capsys):
    csv_path, json_path = tmp_path / "h.csv", tmp_path / "h.json"
    args = ["run", *SMALL, "--checkpoint-dir", str(tmp_path / "ck"), "--verbose", "0"]
    assert cli.main([*args, "--history-csv", str(csv_path), "--history-json", str(json_path)]) == 0
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["round"] for r in rows] == ["1", "2"]
    assert rows[0]["recycled_layers"] == "" and len(rows[1]["recycled_layers"].split()) == 2
    history = json.loads(json_path.read_text())["history"]
    assert len(history["comm_cost"]) == 2 and history["comm_cost"][0] == 1.0
    # Same directory, more rounds: resumes after round 2 instead of starting over,
    # here on the in-process backend (a checkpoint of one backend resumes on the other).
    assert (
        cli.main(
            [
                "run",
                *SMALL[2:],
                "--rounds",
                "3",
                "--checkpoint-dir",
                str(tmp_path / "ck"),
                "--verbose",
                "0",
                "--history-json",
                str(json_path),
                "--backend",
                "tensorflow",
            ]
        )
        == 0
    )
    resumed = json.loads(json_path.read_text())["history"]
    assert resumed["comm_cost"][:2] == history["comm_cost"]
    assert len(resumed["comm_cost"]) == 3
    assert "3 rounds" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["quickstart", "run"])
def test_help_lists_options(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert "--clients-per-round" in capsys.readouterr().out


def test_too_many_clients_per_round(capsys):
    assert cli.main(["quickstart", "--num-clients", "4", "--clients-per-round", "5"]) == 2
    assert "--clients-per-round (5)" in capsys.readouterr().err


def test_delta_too_large_is_a_clear_error(capsys):
    assert cli.main(["run", *SMALL, "--delta", "4"]) == 2
    assert "L=4" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--rounds", "0"], ["--alpha", "-1"], ["--delta", "-2"]])
def test_bad_numbers_are_rejected(bad, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["quickstart", *bad])
    assert info.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "quickstart" in capsys.readouterr().out
