"""The `keras-luar` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, received {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, received {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text}")
    return value


def _add_quickstart(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="FedAvg vs FedLUAR on the embedded scikit-learn digits data",
        description=(
            "Trains a small CNN with FedAvg and with FedLUAR on scikit-learn's digits, "
            "split over clients with a Dirichlet partition, and prints a per-round table "
            "and a final comparison of accuracy, communication and time."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--rounds", type=_positive_int, default=30, help="federated rounds")
    parser.add_argument("--num-clients", type=_positive_int, default=32, help="clients in total")
    parser.add_argument(
        "--clients-per-round", type=_positive_int, default=8, help="clients sampled per round"
    )
    parser.add_argument(
        "--num-recycled-layers",
        "--delta",
        type=_non_negative_int,
        default=2,
        help="FedLUAR's δ: layers recycled per round (the CNN has 4 candidates)",
    )
    parser.add_argument("--alpha", type=_positive_float, default=0.5, help="Dirichlet α")
    parser.add_argument("--local-steps", type=_positive_int, default=20, help="τ, local steps")
    parser.add_argument("--batch-size", type=_positive_int, default=20, help="local batch size")
    parser.add_argument(
        "--learning-rate", type=_positive_float, default=0.05, help="local SGD learning rate"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of everything random")
    parser.set_defaults(handler=_quickstart)


def _quickstart(args: argparse.Namespace) -> int:
    from keras_luar.quickstart import run_quickstart

    if args.clients_per_round > args.num_clients:
        print(
            f"error: --clients-per-round ({args.clients_per_round}) must not exceed "
            f"--num-clients ({args.num_clients})",
            file=sys.stderr,
        )
        return 2
    print(
        f"keras-luar quickstart: digits, {args.num_clients} clients (Dirichlet α={args.alpha}), "
        f"{args.clients_per_round} per round, τ={args.local_steps}, batch {args.batch_size}, "
        f"FedLUAR δ={args.num_recycled_layers}, seed {args.seed}",
        flush=True,
    )
    header = f"{'round':>5}  {'FedAvg acc':>10}  {'FedLUAR acc':>11}  {'upload':>6}  recycled"
    printed_header = False

    def on_round(round_num, fedavg, fedluar):
        nonlocal printed_header
        if not printed_header:
            print(header, flush=True)
            printed_header = True
        fraction = fedluar.upload_params[-1] / fedavg.upload_params[-1]
        recycled = ", ".join(fedluar.recycled[-1]) or "-"
        print(
            f"{round_num + 1:>5}  {fedavg.accuracy[-1]:>10.4f}  {fedluar.accuracy[-1]:>11.4f}  "
            f"{fraction:>6.2f}  {recycled}",
            flush=True,
        )

    try:
        fedavg, fedluar, layout = run_quickstart(
            rounds=args.rounds,
            num_clients=args.num_clients,
            clients_per_round=args.clients_per_round,
            num_recycled_layers=args.num_recycled_layers,
            alpha=args.alpha,
            local_steps=args.local_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            on_round=on_round,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    per_round = layout.trainable_size * args.clients_per_round
    print()
    print(f"{'method':<8}  {'final acc':>9}  {'best acc':>8}  {'comm vs FedAvg':>14}  {'time (s)':>8}")
    for result in (fedavg, fedluar):
        print(
            f"{result.name:<8}  {result.accuracy[-1]:>9.4f}  {max(result.accuracy):>8.4f}  "
            f"{result.comm_cost(per_round):>14.3f}  {result.seconds:>8.1f}"
        )
    saved = 1 - fedluar.comm_cost(per_round)
    print(
        f"\nFedLUAR uploaded {saved:.0%} less than FedAvg "
        f"({sum(fedluar.upload_params):,} vs {sum(fedavg.upload_params):,} parameters); "
        f"final accuracy difference {fedluar.accuracy[-1] - fedavg.accuracy[-1]:+.4f}."
    )
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `keras-luar` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
