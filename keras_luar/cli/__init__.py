"""The `keras-luar` command line.

Only TensorFlow-free modules are imported until a command runs: `--help` and
argument errors come before TensorFlow loads. Each command imports what it needs
when it runs.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence

from keras_luar.cli.common import _method_spec  # noqa: F401 - tests check it directly
from keras_luar.cli.compare import _add_compare
from keras_luar.cli.quickstart import _add_quickstart
from keras_luar.cli.run import _add_run
from keras_luar.cli.worker import _add_worker

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `keras-luar` argument parser."""
    parser = argparse.ArgumentParser(
        prog="keras-luar",
        description="Communication-efficient federated learning for Keras models (FedLUAR).",
    )
    from keras_luar import __version__

    parser.add_argument("--version", action="version", version=f"keras-luar {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_quickstart(subparsers)
    _add_run(subparsers)
    _add_compare(subparsers)
    _add_worker(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-luar` console script.

    Ctrl-C (SIGINT) during a command prints one line, saying how far it got and
    how to resume, and returns 130 (the shell's status for SIGINT) instead of a
    traceback.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    args.argv = argv
    args.progress = {}
    if args.command is None:
        parser.print_help()
        return 2
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    # A terminal's Ctrl-C also stops TFF's worker (same process group), so what
    # surfaces may be the error of a call to it rather than KeyboardInterrupt.
    previous = None
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous = None
    from keras_luar.training import console

    # The command prints its own line on Ctrl-C (with the command to resume).
    token = console.report_interrupts.set(False)
    try:
        return args.handler(args)
    except BaseException as error:
        if not (isinstance(error, KeyboardInterrupt) or interrupted):
            raise
        on_interrupt = getattr(args, "on_interrupt", None)
        message = on_interrupt(args) if on_interrupt else f"keras-luar {args.command}: interrupted"
        print(message, file=sys.stderr, flush=True)
        _release_quietly(error)
        return 130
    finally:
        console.report_interrupts.reset(token)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _release_quietly(error: BaseException) -> None:
    """Frees the interrupted call's frames without a "never awaited" warning.

    Ctrl-C can land while TFF's runtime holds a coroutine it has not awaited yet
    (`AsyncExecutionContext.invoke`); when the traceback's frames go, Python
    warns about it on stderr, under the one line the command promised. The
    frames are cleared here, under a filter for that warning alone.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning
        )
        seen = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            traceback.clear_frames(error.__traceback__)
            error = error.__context__
        gc.collect()
