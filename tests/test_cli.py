"""The `keras-luar` command line: quickstart output and argument errors."""

from __future__ import annotations

import re

import pytest

from keras_luar import cli

SMALL = ["--rounds", "2", "--num-clients", "6", "--clients-per-round", "3", "--local-steps", "2"]


def test_quickstart_prints_rounds_and_a_consistent_comparison(capsys):
    assert cli.main(["quickstart", *SMALL]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(.+)$", out, re.M)
    assert [int(r[0]) for r in rows] == [1, 2]
    first, second = rows
    assert first[3] == "1.00" and first[4] == "-"  # round 0 sends everything
    assert len(second[4].split(", ")) == 2  # δ = 2 layers recycled in round 2
    final = dict(re.findall(r"^(FedAvg|FedLUAR)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", out, re.M))
    assert float(final["FedAvg"]) == 1.0
    # Cumulative cost over 2 rounds = (1 + fraction of round 2) / 2.
    assert float(final["FedLUAR"]) == pytest.approx((1 + float(second[3])) / 2, abs=0.006)
    assert "less than FedAvg" in out


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["quickstart", "--help"])
    assert info.value.code == 0
    assert "--clients-per-round" in capsys.readouterr().out


def test_too_many_clients_per_round(capsys):
    assert cli.main(["quickstart", "--num-clients", "4", "--clients-per-round", "5"]) == 2
    assert "--clients-per-round (5)" in capsys.readouterr().err


def test_delta_too_large_is_a_clear_error(capsys):
    assert cli.main(["quickstart", *SMALL, "--delta", "4"]) == 2
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
