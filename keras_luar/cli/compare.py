"""`keras-luar compare`: compare federated methods on the embedded digits (the paper's Table 1).

Trains each method on each seed on the digits CNN, with the same client split,
initial weights and clients per round for every method of a seed. Prints a line
per finished run and a Markdown table of final accuracy (mean ± std over seeds)
and upload relative to FedAvg, and writes compare.md, compare.csv,
histories.json and compare.png (accuracy against cumulative upload) to --out.
A method is name[+luar][:key=value,...]. Options are the method's own and go to
FederatedTrainer, e.g. fedprox+luar:proximal_strength=0.01, except
server_learning_rate=η, which the comparison turns into a server SGD optimizer
with learning rate η, e.g. fedavg:server_learning_rate=1.0.
"""

from __future__ import annotations

import argparse
import sys

from keras_luar import _cli_defaults as defaults
from keras_luar import _runtime
from keras_luar.cli.common import (
    _add_command,
    _add_common,
    _algorithms,
    _check_clients,
    _luar_compatible,
    _method_spec,
    _setup_from,
)


def _add_compare(subparsers) -> None:
    parser = _add_command(
        subparsers,
        "compare",
        __doc__,
        extra=f"Methods: {', '.join(_algorithms())}; +luar adds LUAR (δ = --num-recycled-layers) "
        f"to {', '.join(_luar_compatible())}; fedopt's server learning rate is "
        f"{defaults.SERVER_LEARNING_RATE} unless given.",
    )
    parser.add_argument(
        "--methods",
        type=_method_spec,
        nargs="+",
        default=list(defaults.DEFAULT_METHODS),
        metavar="METHOD",
        help="methods to compare, in table order",
    )
    _add_common(parser, seeds=True)
    parser.add_argument("--out", default="compare_results", help="folder for the result files")
    parser.set_defaults(handler=_compare, on_interrupt=_compare_interrupted, command_parser=parser)


def _compare(args: argparse.Namespace) -> int:
    if not _check_clients(args):
        return 2
    _runtime.import_tensorflow_quietly()
    import matplotlib

    matplotlib.use("Agg")  # writes compare.png; no display needed or wanted

    from keras_luar.compare import compare_methods, parse_method_spec

    try:
        methods = [parse_method_spec(m) for m in args.methods]
    except ValueError as error:
        args.command_parser.error(f"argument --methods: {error}")  # exits with status 2
    args.progress.update(runs=len(methods) * len(args.seeds), finished=[])
    setup = _setup_from(args)
    print(
        f"keras-luar compare: digits, {setup.num_clients} clients (Dirichlet α={setup.alpha}), "
        f"{setup.clients_per_round} per round, {setup.rounds} rounds, τ={setup.local_steps}, "
        f"LUAR δ={args.num_recycled_layers}, seeds {' '.join(map(str, args.seeds))}",
        flush=True,
    )

    def on_result(spec, seed, history):
        args.progress["finished"].append(f"{spec.label}, seed {seed}")
        h = history.history
        print(
            f"seed {seed}  {spec.label:<16} accuracy {h['val_accuracy'][-1]:.4f}  "
            f"comm {h['comm_cost'][-1]:.3f}  {sum(h['round_time']):6.1f} s",
            flush=True,
        )

    try:
        result = compare_methods(
            methods,
            seeds=args.seeds,
            setup=setup,
            num_recycled_layers=args.num_recycled_layers,
            on_result=on_result,
        )
    except (ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paths = result.save(args.out)
    print()
    print(result.to_markdown())
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _compare_interrupted(args: argparse.Namespace) -> str:
    finished = args.progress.get("finished", [])
    if finished:
        done = (
            f"after {len(finished)} of {args.progress['runs']} runs (the last finished: "
            f"{finished[-1]})"
        )
    else:
        done = "before its first run finished"
    return (
        f"keras-luar compare: interrupted {done}; nothing was written to {args.out}; compare "
        "keeps no checkpoints (`keras-luar run --checkpoint-dir DIR` makes a run resumable)."
    )
