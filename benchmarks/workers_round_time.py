"""Round time of FederatedTrainer(workers=...) with 1, 2 and 4 local TFF workers.

A fixed many-client workload (the digits CNN of `keras_luar.quickstart`, 16
clients per round by default, FedLUAR δ = 2) runs on this machine with N
`keras_luar.backends.LocalWorkers`, each client's training on one worker, the
aggregation in the driver. Every configuration is measured in this one run, in
turns, and printed with its ratio to a single worker; the in-process driver
without workers (``backend="tensorflow"``) is timed as well, for reference.
Workers on one machine share its cores, so this measures the dispatch's
overhead and how well the workers share a machine, not a cluster's scaling.

    uv run python benchmarks/workers_round_time.py [--workers 1 2 4] [--rounds 4] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics

import tensorflow as tf

import keras_luar
from keras_luar.backends import LocalWorkers
from keras_luar.quickstart import DigitsSetup, digits_data, make_digits_trainer


def round_seconds(setup: DigitsSetup, data, workers: list[str] | None) -> list[float]:
    """Seconds of each round after the first (which includes one-off tracing)."""
    options = {"workers": workers} if workers else {"backend": "tensorflow"}
    trainer = make_digits_trainer(
        setup, algorithm="fedluar", num_recycled_layers=2, seed=0, **options
    )
    history = trainer.fit(
        data, rounds=setup.rounds, clients_per_round=setup.clients_per_round, verbose=0
    )
    return history.history["round_time"][1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-clients", type=int, default=32)
    parser.add_argument("--clients-per-round", type=int, default=16)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1, help="turns over all configurations")
    args = parser.parse_args()
    setup = DigitsSetup(
        rounds=args.rounds, num_clients=args.num_clients,
        clients_per_round=args.clients_per_round, local_steps=args.local_steps,
    )  # fmt: skip
    data = digits_data(setup, seed=0)
    names = ["in process (no workers)"] + [
        f"{n} worker{'s' if n > 1 else ''}" for n in args.workers
    ]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    pools = {n: LocalWorkers(n) for n in args.workers}  # started once, before any timing
    try:
        for _ in range(args.repeats):
            seconds[names[0]] += round_seconds(setup, data, None)
            for name, n in zip(names[1:], args.workers, strict=True):
                seconds[name] += round_seconds(setup, data, pools[n].addresses)
    finally:
        for pool in pools.values():
            pool.stop()
    med = {name: statistics.median(v) for name, v in seconds.items()}
    single = med.get("1 worker")
    print(
        f"keras_luar {keras_luar.__version__}: digits CNN, FedLUAR δ=2, {setup.clients_per_round} "
        f"clients × τ={setup.local_steps} local steps per round, batch {setup.batch_size}, "
        f"{args.repeats} repeat(s), {os.cpu_count()} CPU cores, TensorFlow sees: "
        f"{'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}"
    )
    for name, value in med.items():
        ratio = f"  {value / single:5.2f}× the single-worker time" if single else ""
        print(
            f"  {name:<24} median {value * 1000:8.1f} ms per round ({len(seconds[name])} rounds){ratio}"
        )


if __name__ == "__main__":
    main()
