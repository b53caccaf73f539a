"""`keras-luar worker`: run a TFF worker that FederatedTrainer(workers=[...]) can send work to.

Runs TFF's own worker_binary on PORT, started without importing TensorFlow. It
listens on every network interface ([::]:PORT; TFF 0.87 has no option to bind
one address) and its protocol is neither authenticated nor encrypted: run it on
a trusted network only.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_luar import _runtime
from keras_luar.cli.common import _add_command


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, received {text}")
    return value


def _add_worker(subparsers) -> None:
    parser = _add_command(subparsers, "worker", __doc__, show_defaults=False)
    parser.add_argument("--port", type=_port, required=True, help="port to listen on")
    parser.add_argument(
        "--max-concurrent-computation-calls", type=int, default=-1,
        help="calls of one computation the worker runs at once; -1 means no limit",
    )  # fmt: skip
    parser.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace) -> int:
    binary = _runtime.worker_binary()
    if binary is None:
        print(
            "keras-luar worker: error: TFF's worker_binary was not found: expected the file "
            "tensorflow_federated/data/worker_binary of an installed tensorflow-federated "
            "(install keras-luar with its dependencies, e.g. `uv sync`).",
            file=sys.stderr,
        )
        return 1
    print(
        f"keras-luar worker: WARNING: {_runtime.BIND_WARNING.format(port=args.port)}",
        file=sys.stderr,
    )
    print(
        f"keras-luar worker: point training at it with workers=['<this host>:{args.port}'].",
        file=sys.stderr,
    )
    sys.stderr.flush()
    sys.stdout.flush()
    # The launcher becomes the worker: nothing is left behind when it is stopped. It
    # imports neither TensorFlow nor TFF, so the worker listens within a fraction of a second.
    os.execv(
        binary,
        [
            binary,
            f"--port={args.port}",
            f"--max_concurrent_computation_calls={args.max_concurrent_computation_calls}",
        ],
    )
    return 1  # pragma: no cover - execv does not return
