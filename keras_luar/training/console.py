"""What a run tells the user while it sets up, and when it is interrupted.

`announce` prints a set-up step's message only if the step is still running after
a second (checking data, building and compiling TFF's computations can take
several), so fast steps stay silent. `interrupted` is the one line printed when
Ctrl-C stops `fit`.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections.abc import Iterator

ANNOUNCE_AFTER_SECONDS = 1.0

# The command line prints interruptions its own way (with the command to resume).
report_interrupts: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "keras_luar_report_interrupts", default=True
)


@contextlib.contextmanager
def announce(message: str, verbose: int) -> Iterator[None]:
    """Prints ``message...`` if the block runs longer than a second (and `verbose` is 1)."""
    if verbose != 1:
        yield
        return
    timer = threading.Timer(
        ANNOUNCE_AFTER_SECONDS, lambda: print(f"{message}...", file=sys.stdout, flush=True)
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def interrupted(rounds_done: int, rounds: int, checkpoint_dir: str | None) -> None:
    """Prints the one line that says where Ctrl-C stopped `fit` and how to resume."""
    if not report_interrupts.get():
        return
    where = f"after round {rounds_done} of {rounds}" if rounds_done else "before round 1 finished"
    if checkpoint_dir is None:
        how = "pass checkpoint_dir= to fit to make a run resumable"
    elif rounds_done:
        how = f"call fit again with checkpoint_dir={checkpoint_dir!r} to resume from there"
    else:
        how = f"nothing was saved yet in {checkpoint_dir!r}"
    print(f"keras_luar: fit interrupted {where}; {how}.", file=sys.stderr, flush=True)
