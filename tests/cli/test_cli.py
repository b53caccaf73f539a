"""The `keras-luar` command line: output, argument errors before TensorFlow loads, Ctrl-C."""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import re
import signal
import subprocess
import sys
import warnings

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
    assert [r["round"] for r in rows] == ["0", "1"]  # 0-based, like CSVLogger's `epoch`
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


# ---- start-up: no TensorFlow before a command runs -------------------------------------

PARSE_ONLY = """
import sys
from keras_luar import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as error:
    code = error.code
heavy = [m for m in ("tensorflow", "tensorflow_federated", "jax") if m in sys.modules]
print("exit", code, "loaded", *heavy, flush=True)
"""


def _parse_only(*argv: str) -> tuple[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", PARSE_ONLY, *argv], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    return result.stdout.strip().splitlines()[-1], result.stderr


def _commands() -> list[str]:
    parser = cli.build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(subparsers.choices)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"]]
    + [[command, "--help"] for command in ("quickstart", "run", "compare", "worker")],
)
def test_help_does_not_import_tensorflow(argv):
    assert set(_commands()) == {"quickstart", "run", "compare", "worker"}  # every command
    last, _ = _parse_only(*argv)
    assert last == "exit 0 loaded"


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "--rounds", "0"], "argument --rounds: expected an int >= 1, received 0"),
        (["run", "--algorithm", "fedsgd"], "argument --algorithm: invalid choice: 'fedsgd'"),
        (["run", "--preset", "mnist"], "argument --preset: invalid choice: 'mnist'"),
        (["quickstart", "--alpha", "-1"], "argument --alpha: expected a number > 0"),
        (
            ["quickstart", "--num-clients", "4", "--clients-per-round", "5"],
            "--clients-per-round (5)",
        ),
        (["compare", "--methods", "fedavg", "fedsgd"], "received 'fedsgd'"),
        (["compare", "--methods", "lbgm+luar"], "+luar only on fedpaq, fedprox, fedopt"),
        (["run", "--algorithm", "fedopt"], "--algorithm fedopt needs a server optimizer"),
        (["worker"], "the following arguments are required: --port"),
        (["worker", "--port", "70000"], "expected a port in 1..65535, received 70000"),
    ],
)
def test_argument_errors_come_before_tensorflow(argv, fragment):
    last, err = _parse_only(*argv)
    assert last == "exit 2 loaded"
    assert fragment in err


def test_cli_defaults_match_their_sources():
    from keras_luar import _cli_defaults, _types, backends, compare, presets
    from keras_luar.experiments.digits import DIGITS_MODELS
    from keras_luar.quickstart import DigitsSetup
    from keras_luar.training import checkpoint

    assert _cli_defaults.LUAR_COMPATIBLE == compare.LUAR_COMPATIBLE
    assert _cli_defaults.DEFAULT_METHODS == compare.DEFAULT_METHODS
    assert (
        _cli_defaults.SERVER_LEARNING_RATE
        == compare.DEFAULT_OPTIONS["fedopt"]["server_learning_rate"]
    )
    assert _cli_defaults.PRESETS == tuple(presets.PRESETS)
    assert _cli_defaults.BACKENDS == backends.BACKENDS == _types.BACKENDS
    assert _cli_defaults.PROGRESS_FILE == checkpoint._PROGRESS
    assert _cli_defaults.DIGITS_MODELS == tuple(DIGITS_MODELS)
    setup = DigitsSetup()
    assert _cli_defaults.DIGITS_SETUP == {k: getattr(setup, k) for k in _cli_defaults.DIGITS_SETUP}


@pytest.mark.parametrize(
    "spec",
    ["fedavg", "FedProx+LUAR:proximal_strength=0.01", "fedsgd", "lbgm+luar", "fedpaq+lora",
     "fedluar+luar", " fedopt : server_learning_rate=2"],
)  # fmt: skip
def test_quick_method_check_agrees_with_compare(spec):
    from keras_luar.compare import parse_method_spec

    try:
        parse_method_spec(spec)
        accepted = True
    except ValueError:
        accepted = False
    try:
        cli._method_spec(spec)
        quick = True
    except argparse.ArgumentTypeError:
        quick = False
    assert quick == accepted


# ---- texts that must say what the code does ---------------------------------------------


def test_compare_help_says_where_server_learning_rate_goes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "except server_learning_rate=η, which the comparison turns into a server SGD" in text
    assert "(server_learning_rate sets a server SGD)" not in text  # the old text


def test_fedopt_without_server_learning_rate_names_the_option(capsys):
    assert cli.main(["run", "--algorithm", "fedopt", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "--server-learning-rate" in err and "e.g. --server-learning-rate 1.2" in err
    assert "tf.keras.optimizers" not in err  # the Python API's advice is not for the CLI


# ---- Ctrl-C ----------------------------------------------------------------------------

TINY = ["--num-clients", "4", "--clients-per-round", "2", "--local-steps", "1", "--batch-size", "4"]


def _interrupt(argv: list[str], after: str, cwd) -> tuple[int, str, str]:
    """Runs the command line, sends SIGINT to its process group once `after` is printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_luar.cli", *argv], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        # pytest-xdist's workers ignore SIGINT and a child inherits that; a terminal's
        # command line starts with the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        seen = []
        for line in process.stdout:  # as a terminal's Ctrl-C: TFF's worker gets it too
            seen.append(line)
            if re.search(after, line):
                os.killpg(process.pid, signal.SIGINT)
                break
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, "".join(seen) + out, err


def test_ctrl_c_in_run_prints_one_line_with_the_resume_command(tmp_path):
    argv = ["run", "--rounds", "40", *TINY, "--verbose", "2", "--checkpoint-dir", "ck"]
    code, out, err = _interrupt(argv, r"^Round 2/40", tmp_path)
    assert code == 130
    assert "Round 2/40" in out
    saved = json.loads((tmp_path / "ck" / "progress.json").read_text())["rounds_done"]
    assert err.splitlines() == [
        f"keras-luar run: interrupted after round {saved} of 40, saved in ck; resume with: "
        "keras-luar run --rounds 40 " + " ".join(TINY) + " --verbose 2 --checkpoint-dir ck"
    ]
    assert saved >= 2


@pytest.mark.parametrize(
    "argv, after, expected",
    [
        (
            ["quickstart", "--rounds", "40", *TINY],
            r"^\s+0\s+FedAvg\s+1\s",
            r"^keras-luar quickstart: interrupted after round \d+ of 40 of FedAvg \(seed 0\); "
            r"the quickstart keeps no checkpoints \(`keras-luar run --checkpoint-dir DIR` "
            r"makes a run resumable\)\.$",
        ),
        (
            ["compare", "--methods", "fedavg", "fedluar", "--rounds", "2", "--seeds", "0", "1",
             *TINY, "--out", "out"],
            r"^seed 0  FedAvg",
            r"^keras-luar compare: interrupted after [1-3] of 4 runs \(the last finished: "
            r"[\w ]+, seed [01]\); nothing was written to out; compare keeps no checkpoints",
        ),
    ],
    ids=["quickstart", "compare"],
)  # fmt: skip
def test_ctrl_c_in_quickstart_and_compare_prints_one_line(argv, after, expected, tmp_path):
    code, _, err = _interrupt(argv, after, tmp_path)
    assert code == 130
    assert len(err.splitlines()) == 1 and re.match(expected, err), err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_a_coroutine_waits_prints_no_never_awaited_warning(monkeypatch, capsys):
    # CI once saw Ctrl-C land while TFF held an un-awaited coroutine: freeing the
    # traceback printed "coroutine ... was never awaited" under the one line.
    async def invoke():
        return 0

    def handler(args):
        pending = invoke()  # held by this frame when Ctrl-C lands  # noqa: F841
        raise KeyboardInterrupt

    def build_parser():
        parser = argparse.ArgumentParser(prog="keras-luar")
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("wait").set_defaults(handler=handler)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["wait"]) == 130
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr().err == "keras-luar wait: interrupted\n"


def test_ctrl_c_without_checkpoint_dir_says_how_to_make_runs_resumable():
    args = cli.build_parser().parse_args(["run"])
    args.argv, args.progress = ["run"], {"rounds": 30, "rounds_done": 4}
    assert args.on_interrupt(args) == (
        "keras-luar run: interrupted after round 4 of 30; this run cannot be resumed: pass "
        "--checkpoint-dir DIR to make runs resumable."
    )
    args.progress = {}  # interrupted before the run said how many rounds it has
    assert "interrupted before round 1 finished" in args.on_interrupt(args)


def test_model_option_trains_the_batchnorm_cnn(tmp_path, capsys):
    argv = ["compare", "--methods", "fedavg", "--rounds", "1", "--seeds", "0", *TINY]
    assert cli.main([*argv, "--model", "bn_cnn", "--out", str(tmp_path)]) == 0
    assert "Model: the digits BN CNN." in (tmp_path / "compare.md").read_text()
    with pytest.raises(SystemExit):
        cli.main(["run", "--model", "resnet"])
    assert "invalid choice: 'resnet'" in capsys.readouterr().err


def test_upload_budget_with_delta_is_a_clear_error(capsys):
    assert cli.main(["run", *SMALL, "--delta", "1", "--upload-budget", "0.5"]) == 2
    assert "upload_budget" in capsys.readouterr().err


def test_bad_upload_budget_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--upload-budget", "1.5"])
    assert "--upload-budget" in capsys.readouterr().err


def test_run_with_upload_budget(tmp_path):
    path = tmp_path / "h.json"
    assert cli.main(["run", *SMALL, "--upload-budget", "0.6", "--history-json", str(path),
                     "--verbose", "0"]) == 0  # fmt: skip
    history = json.load(open(path))["history"]
    assert history["num_recycled"][0] == 0
    assert history["comm_cost"][-1] < 1.0
