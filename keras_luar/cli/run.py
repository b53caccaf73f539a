"""`keras-luar run`: train one method on the embedded digits or a paper preset; save its History.

Trains the digits CNN (or, with --preset, one of the paper's benchmarks with the
paper's settings) with FederatedTrainer and one method, printing one line per
round; optionally writes the History as CSV and/or JSON and checkpoints every
round (a second run with the same --checkpoint-dir resumes). With --preset,
--rounds, --seed and --num-recycled-layers override the paper's values when
given; the other digits options do not apply.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from keras_luar import _cli_defaults as defaults
from keras_luar import _runtime
from keras_luar.cli.common import (
    _add_command,
    _add_common,
    _algorithms,
    _check_clients,
    _delta_given,
    _positive_float,
    _setup_from,
)


def _add_run(subparsers) -> None:
    parser = _add_command(subparsers, "run", __doc__)
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
        help="server SGD learning rate (default: apply the aggregated update as is; "
        "--algorithm fedopt needs one)",
    )
    parser.add_argument("--checkpoint-dir", default=None, help="save state every round; resume")
    parser.add_argument(
        "--backend",
        choices=defaults.BACKENDS,
        default="auto",
        help="where rounds run: TFF's C++ runtime (CPU), in-process TensorFlow (GPU when "
        "present), or auto (tensorflow: the faster on a CPU too; tff is the reference)",
    )
    parser.add_argument(
        "--upload-budget",
        type=_budget,
        help="instead of δ: hold the cumulative upload at this share of FedAvg's (extension)",
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
    if args.upload_budget is not None:
        overrides["upload_budget"] = args.upload_budget
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
    from keras_luar.algorithms import registry  # TensorFlow-free

    needs_one = registry.get(args.algorithm).server_optimizer == "required"
    if needs_one and args.server_learning_rate is None:
        print(
            f"error: --algorithm {args.algorithm} needs a server optimizer: pass "
            "--server-learning-rate "
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
            **({} if args.upload_budget is None else {"upload_budget": args.upload_budget}),
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


def _budget(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value
