"""`keras-luar quickstart`: FedAvg against FedLUAR on the embedded scikit-learn digits.

Trains a small CNN with FedAvg and with FedLUAR on scikit-learn's digits, split
over clients with a Dirichlet partition, from the same initial weights and with
the same clients in every round. Prints a row per round and a final comparison
of accuracy, communication and time.
"""

from __future__ import annotations

import argparse
import sys

from keras_luar import _runtime
from keras_luar.cli.common import _add_command, _add_common, _check_clients, _setup_from


def _add_quickstart(subparsers) -> None:
    parser = _add_command(subparsers, "quickstart", __doc__)
    _add_common(parser, seeds=True)
    parser.set_defaults(handler=_quickstart, on_interrupt=_quickstart_interrupted)


def _quickstart(args: argparse.Namespace) -> int:
    if not _check_clients(args):
        return 2
    args.progress["rounds"] = args.rounds
    _runtime.import_tensorflow_quietly()
    from keras_luar.quickstart import compare_on_digits, summarize

    setup = _setup_from(args)
    print(
        f"keras-luar quickstart: digits, {setup.num_clients} clients (Dirichlet α={setup.alpha}), "
        f"{setup.clients_per_round} per round, τ={setup.local_steps}, batch {setup.batch_size}, "
        f"lr {setup.learning_rate} (×0.1 at rounds {', '.join(str(r + 1) for r in setup.decay_rounds)}), "
        f"FedLUAR δ={args.num_recycled_layers}, seeds {' '.join(map(str, args.seeds))}",
        flush=True,
    )
    print(
        f"{'seed':>4}  {'method':<8}{'round':>5}  {'accuracy':>8}  {'loss':>7}  {'upload':>6}  recycled"
    )

    def on_round(seed, name, round_num, logs, recycled, fraction):
        args.progress.update(seed=seed, method=name, rounds_done=round_num + 1)
        print(
            f"{seed:>4}  {name:<8}{round_num + 1:>5}  {logs['val_accuracy']:>8.4f}  "
            f"{logs['loss']:>7.4f}  {fraction:>6.2f}  {', '.join(recycled) or '-'}",
            flush=True,
        )

    histories = []
    for seed in args.seeds:
        try:
            histories.append(
                compare_on_digits(
                    setup,
                    num_recycled_layers=args.num_recycled_layers,
                    seed=seed,
                    on_round=lambda n, r, logs, rec, frac, s=seed: on_round(
                        s, n, r, logs, rec, frac
                    ),
                )
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    summary = summarize(histories)
    print()
    print(f"{'method':<8}  {'final accuracy':>15}  {'comm vs FedAvg':>14}  {'train time (s)':>14}")
    for name, row in summary.items():
        accuracy = f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
        print(f"{name:<8}  {accuracy:>15}  {row['comm_cost']:>14.3f}  {row['seconds']:>14.1f}")
    fedavg, fedluar = summary["FedAvg"], summary["FedLUAR"]
    print(
        f"\nFedLUAR uploaded {1 - fedluar['comm_cost']:.0%} less than FedAvg; final accuracy "
        f"{fedluar['accuracy_mean'] - fedavg['accuracy_mean']:+.4f} against FedAvg "
        f"(mean over {len(histories)} seed{'s' if len(histories) > 1 else ''})."
    )
    return 0


def _quickstart_interrupted(args: argparse.Namespace) -> str:
    progress = args.progress
    if progress.get("rounds_done"):
        done = (
            f"after round {progress['rounds_done']} of {progress['rounds']} of "
            f"{progress['method']} (seed {progress['seed']})"
        )
    else:
        done = "before its first round finished"
    return (
        f"keras-luar quickstart: interrupted {done}; the quickstart keeps no checkpoints "
        "(`keras-luar run --checkpoint-dir DIR` makes a run resumable)."
    )
