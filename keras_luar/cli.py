"""The `keras-luar` command line."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence

# Only TensorFlow-free modules at import: `--help` and argument errors come before
# TensorFlow loads. Each command imports what it needs when it runs.
from keras_luar import _cli_defaults as defaults
from keras_luar import _runtime


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


def _add_common(parser, *, seeds: bool) -> None:
    setup = defaults.DIGITS_SETUP
    parser.add_argument(
        "--rounds", type=_positive_int, default=setup["rounds"], help="federated rounds"
    )
    parser.add_argument(
        "--num-clients", type=_positive_int, default=setup["num_clients"], help="clients in total"
    )
    parser.add_argument(
        "--clients-per-round",
        type=_positive_int,
        default=setup["clients_per_round"],
        help="clients sampled per round",
    )
    parser.add_argument(
        "--num-recycled-layers",
        "--delta",
        type=_non_negative_int,
        default=2,
        help="FedLUAR's δ: layers recycled per round (the digits CNN has 4 candidates); "
        "for run: given, it also stacks LUAR on the methods that take it",
    )
    parser.add_argument("--alpha", type=_positive_float, default=setup["alpha"], help="Dirichlet α")
    parser.add_argument(
        "--local-steps", type=_positive_int, default=setup["local_steps"], help="τ, local steps"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=setup["batch_size"], help="local batch size"
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=setup["learning_rate"],
        help="local SGD learning rate (momentum 0.9)",
    )
    if seeds:
        parser.add_argument(
            "--seeds",
            type=_non_negative_int,
            nargs="+",
            default=[0],
            help="one run per seed; the summary gives mean ± std",
        )
    else:
        parser.add_argument(
            "--seed", type=_non_negative_int, default=0, help="seed of everything random"
        )


def _setup_from(args):
    from keras_luar.quickstart import DigitsSetup

    return DigitsSetup(
        rounds=args.rounds,
        num_clients=args.num_clients,
        clients_per_round=args.clients_per_round,
        alpha=args.alpha,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
    )


def _check_clients(args) -> bool:
    if args.clients_per_round > args.num_clients:
        print(
            f"error: --clients-per-round ({args.clients_per_round}) must not exceed "
            f"--num-clients ({args.num_clients})",
            file=sys.stderr,
        )
        return False
    return True


def _add_quickstart(subparsers) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="FedAvg vs FedLUAR on the embedded scikit-learn digits data",
        description=(
            "Trains a small CNN with FedAvg and with FedLUAR on scikit-learn's digits, "
            "split over clients with a Dirichlet partition, from the same initial weights "
            "and with the same clients in every round. Prints a row per round and a final "
            "comparison of accuracy, communication and time."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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


def _add_run(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="train one method on the embedded digits data or a paper preset; save its History",
        description=(
            "Trains the digits CNN (or, with --preset, one of the paper's benchmarks with the "
            "paper's settings) with FederatedTrainer and one method, printing one line per "
            "round; optionally writes the History as CSV and/or JSON and checkpoints every "
            "round (a second run with the same --checkpoint-dir resumes). With --preset, "
            "--rounds, --seed and --num-recycled-layers override the paper's values when "
            "given; the other digits options do not apply."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--algorithm", choices=_algorithms(), default="fedluar")
    parser.add_argument(
        "--preset",
        choices=defaults.PRESETS,
        default=None,
        help="a paper benchmark (needs its data in --data-dir or $KERAS_LUAR_DATA)",
    )
    parser.add_argument("--data-dir", default=None, help="data cache for --preset")
    _add_common(parser, seeds=False)
    parser.add_argument(
        "--server-learning-rate",
        type=_positive_float,
        default=None,
        help="server SGD learning rate (default: apply the aggregated update as is; "
        "--algorithm fedopt needs one)",
    )
    parser.add_argument("--checkpoint-dir", default=None, help="save state every round; resume")
    parser.add_argument(
        "--backend",
        choices=defaults.BACKENDS,
        default="auto",
        help="where rounds run: TFF's C++ runtime (CPU), in-process TensorFlow (GPU when "
        "present), or auto (tensorflow when TensorFlow sees a GPU)",
    )
    parser.add_argument("--history-csv", default=None, help="write the History as CSV here")
    parser.add_argument("--history-json", default=None, help="write the History as JSON here")
    parser.add_argument(
        "--verbose", type=int, choices=[0, 1, 2], default=2, help="Keras-style verbosity"
    )
    parser.set_defaults(handler=_run, on_interrupt=_run_interrupted)


def _round_counter(progress: dict):
    """A Keras callback that records in `progress` how many rounds have finished."""
    import tensorflow as tf

    def on_epoch_end(epoch, logs=None):
        progress["rounds_done"] = epoch + 1

    return tf.keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)


def _run_preset(args: argparse.Namespace):
    import tensorflow as tf

    from keras_luar.data.cache import MissingDataError
    from keras_luar.presets import PRESETS

    try:
        preset = PRESETS[args.preset](data_dir=args.data_dir, seed=args.seed)
    except MissingDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    overrides = {}
    if _delta_given(args):
        overrides["num_recycled_layers"] = args.num_recycled_layers
    if args.server_learning_rate is not None:
        overrides["server_optimizer"] = tf.keras.optimizers.SGD(args.server_learning_rate)
    trainer = preset.trainer(
        algorithm=args.algorithm, seed=args.seed, backend=args.backend, **overrides
    )
    rounds = args.rounds if "--rounds" in args.given else None
    s = preset.settings
    args.progress["rounds"] = rounds or s.rounds
    print(
        f"keras-luar run --preset {preset.name}: {len(preset.data.client_ids)} clients, "
        f"{s.clients_per_round} per round, {rounds or s.rounds} rounds, τ={s.local_steps}, "
        f"batch {s.batch_size}, lr {s.learning_rate} (×{s.decay_factor} at {s.decay_rounds}), "
        f"weight decay {s.weight_decay}, {args.algorithm}",
        flush=True,
    )
    return preset.fit(
        trainer,
        rounds=rounds,
        verbose=args.verbose,
        checkpoint_dir=args.checkpoint_dir,
        callbacks=[_round_counter(args.progress)],
    )


def _check_server_optimizer(args: argparse.Namespace) -> bool:
    if args.algorithm == "fedopt" and args.server_learning_rate is None:
        print(
            "error: --algorithm fedopt needs a server optimizer: pass --server-learning-rate "
            "(the learning rate of the server's SGD), e.g. --server-learning-rate "
            f"{defaults.SERVER_LEARNING_RATE} (the paper's FEMNIST setting). Received: no "
            "--server-learning-rate",
            file=sys.stderr,
        )
        return False
    return True


def _run(args: argparse.Namespace) -> int:
    if not _check_server_optimizer(args):
        return 2
    if args.preset is None and not _check_clients(args):
        return 2
    if args.preset is None:
        args.progress["rounds"] = args.rounds
    _runtime.import_tensorflow_quietly()
    if args.preset is not None:
        try:
            history = _run_preset(args)
        except (ValueError, TypeError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if history is None:
            return 2
        return _write_and_report(args, history)
    from keras_luar.quickstart import digits_data, fit_digits, make_digits_trainer

    setup = _setup_from(args)
    try:
        trainer = make_digits_trainer(
            setup,
            algorithm=args.algorithm,
            # δ as given; else the method's own (2 for fedluar, no LUAR for the others).
            num_recycled_layers=args.num_recycled_layers if _delta_given(args) else None,
            seed=args.seed,
            server_learning_rate=args.server_learning_rate,
            backend=args.backend,
        )
        history = fit_digits(
            trainer,
            setup,
            digits_data(setup, args.seed),
            verbose=args.verbose,
            checkpoint_dir=args.checkpoint_dir,
            callbacks=[_round_counter(args.progress)],
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _write_and_report(args, history)


def _saved_rounds(checkpoint_dir: str) -> int | None:
    """Rounds held by the checkpoint in `checkpoint_dir`, None if it holds none."""
    path = os.path.join(checkpoint_dir, defaults.PROGRESS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return int(json.load(f)["rounds_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_interrupted(args: argparse.Namespace) -> str:
    progress = args.progress
    of = f" of {progress['rounds']}" if progress.get("rounds") else ""
    if args.checkpoint_dir is None:
        done = progress.get("rounds_done", 0)
        where = f"after round {done}{of}" if done else f"before round 1{of} finished"
        return (
            f"keras-luar run: interrupted {where}; this run cannot be resumed: pass "
            "--checkpoint-dir DIR to make runs resumable."
        )
    # The checkpoint, not the last finished round, says where a second run goes on.
    saved = _saved_rounds(args.checkpoint_dir)
    command = shlex.join(["keras-luar", *args.argv])
    if saved:
        return (
            f"keras-luar run: interrupted after round {saved}{of}, saved in "
            f"{args.checkpoint_dir}; resume with: {command}"
        )
    return (
        f"keras-luar run: interrupted before round 1{of} finished (nothing saved in "
        f"{args.checkpoint_dir} yet); start again with: {command}"
    )


def _write_and_report(args: argparse.Namespace, history) -> int:
    from keras_luar.history_io import write_history_csv, write_history_json

    if args.history_csv:
        write_history_csv(history, args.history_csv)
    if args.history_json:
        write_history_json(history, args.history_json)
    h = history.history
    print(
        f"{args.algorithm}: final val_accuracy {h['val_accuracy'][-1]:.4f}, "
        f"comm vs FedAvg {h['comm_cost'][-1]:.3f}, {len(h['loss'])} rounds"
    )
    return 0


def _delta_given(args: argparse.Namespace) -> bool:
    return "--num-recycled-layers" in args.given or "--delta" in args.given


def _method_spec(text: str) -> str:
    """Checks a --methods value's name and ``+luar`` (its options are checked when it runs)."""
    head = text.strip().partition(":")[0]
    name, plus, suffix = (part.strip() for part in head.lower().partition("+"))
    if name not in _algorithms():
        raise argparse.ArgumentTypeError(
            f"expected name[+luar][:key=value,...] with a name among "
            f"{', '.join(_algorithms())}; received {text!r}"
        )
    if plus and suffix != "luar":
        raise argparse.ArgumentTypeError(
            f"expected nothing or +luar after the method name; received {text!r}"
        )
    if plus and name not in _luar_compatible():
        raise argparse.ArgumentTypeError(
            f"expected +luar only on {', '.join(_luar_compatible())}; received {text!r}"
        )
    return text


def _algorithms() -> tuple[str, ...]:
    """Every registered method, without importing TensorFlow (the registry's names)."""
    from keras_luar.algorithms import registry

    return registry.names()


def _luar_compatible() -> tuple[str, ...]:
    """The methods LUAR stacks on: the built-ins' from a TF-free copy, others' from their spec."""
    from keras_luar.algorithms import registry

    extra = [
        n
        for n in registry.names()
        if n not in registry.BUILTIN and registry.get(n).luar == "optional"
    ]
    return (*defaults.LUAR_COMPATIBLE, *extra)


def _add_compare(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare federated methods on the embedded digits data (the paper's Table 1)",
        description=(
            "Trains each method on each seed on the digits CNN, with the same client split, "
            "initial weights and clients per round for every method of a seed. Prints a line "
            "per finished run and a Markdown table of final accuracy (mean ± std over seeds) "
            "and upload relative to FedAvg, and writes compare.md, compare.csv, "
            "histories.json and compare.png (accuracy against cumulative upload) to --out. "
            f"A method is name[+luar][:key=value,...]: one of {', '.join(_algorithms())}; "
            "+luar adds LUAR (δ = --num-recycled-layers) to "
            f"{', '.join(defaults.LUAR_COMPATIBLE[:-1])} or {defaults.LUAR_COMPATIBLE[-1]}. "
            "Options are the method's own and go to FederatedTrainer, e.g. "
            "fedprox+luar:proximal_strength=0.01, except server_learning_rate=η, which the "
            "comparison turns into a server SGD optimizer with learning rate η (fedopt "
            f"gets {defaults.SERVER_LEARNING_RATE} unless given), e.g. "
            "fedavg:server_learning_rate=1.0."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, received {text}")
    return value


def _add_worker(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a TFF worker that FederatedTrainer(workers=[...]) can send client work to",
        description=(
            "Runs TFF's own worker_binary on PORT. It listens on every network interface "
            "([::]:PORT; TFF 0.87 has no option to bind one address) and its protocol is "
            "neither authenticated nor encrypted: run it on a trusted network only."
        ),
    )
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
        return 130
    finally:
        console.report_interrupts.reset(token)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
