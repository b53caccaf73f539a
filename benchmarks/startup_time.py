"""Start-up time of the `keras-luar` command, against importing TensorFlow.

Measures, each in fresh processes, several times, and prints the median:

* ``python -c "import tensorflow"``: the floor of anything that imports TensorFlow;
* ``keras-luar --help`` and ``keras-luar run --help``: should not import TensorFlow
  at all, so a small fraction of the first;
* ``keras-luar worker --port N``: the time from launch until the worker accepts a
  TCP connection on its port.

    uv run python benchmarks/startup_time.py [--repeats 5]

Run it on an idle machine: every figure is a wall-clock time of a whole process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time


def keras_luar_command() -> list[str]:
    """The installed `keras-luar` console script (next to this Python), as argv."""
    script = os.path.join(os.path.dirname(sys.executable), "keras-luar")
    if not os.path.exists(script):
        script = shutil.which("keras-luar") or ""
    if not script:
        raise SystemExit("keras-luar is not installed in this environment (run `uv sync`).")
    return [script]


def seconds_to_exit(argv: list[str]) -> float:
    """Wall-clock seconds of one run of `argv` (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        return s.getsockname()[1]


def seconds_to_listen(argv: list[str], port: int, timeout: float = 120.0) -> float:
    """Seconds from starting `argv` until something accepts a connection on `port`."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with socket.create_connection(("localhost", port), timeout=0.5):
                    return time.perf_counter() - start
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"{argv} exited with status {process.returncode}")
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"{argv} did not listen on port {port} within {timeout} s")
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command")
    parser.add_argument("--no-worker", action="store_true", help="skip the worker launch")
    args = parser.parse_args()
    cli = keras_luar_command()
    commands = {
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
        "keras-luar --help": [*cli, "--help"],
        "keras-luar run --help": [*cli, "run", "--help"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    if not args.no_worker:
        seconds["keras-luar worker: launch to listening"] = []
    # In turns, so that a change in the machine's load affects every command alike.
    for _ in range(args.repeats):
        for name, argv in commands.items():
            seconds[name].append(seconds_to_exit(argv))
        if not args.no_worker:
            port = free_port()
            worker = [*cli, "worker", "--port", str(port)]
            seconds["keras-luar worker: launch to listening"].append(
                seconds_to_listen(worker, port)
            )
    floor = statistics.median(seconds['python -c "import tensorflow"'])
    print(f"{'command':<40} {'median (s)':>10} {'min (s)':>8} {'vs import tensorflow':>21}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<40} {median:>10.3f} {min(values):>8.3f} {median / floor:>21.3f}")
    print(f"\n{args.repeats} runs each, in turns; ratio = median / median of `import tensorflow`.")


if __name__ == "__main__":
    main()
