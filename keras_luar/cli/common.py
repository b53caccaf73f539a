"""What the `keras-luar` commands share: argument types, the digits options, method names."""

from __future__ import annotations

import argparse
import sys

from keras_luar import _cli_defaults as defaults


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


# The digits experiment's options: (flag, type, help). Each flag names a DigitsSetup field
# (--num-clients -> num_clients) and takes its default from defaults.DIGITS_SETUP.
_SETUP_OPTIONS = (
    ("--rounds", _positive_int, "federated rounds"),
    ("--num-clients", _positive_int, "clients in total"),
    ("--clients-per-round", _positive_int, "clients sampled per round"),
    ("--alpha", _positive_float, "Dirichlet α"),
    ("--local-steps", _positive_int, "τ, local steps"),
    ("--batch-size", _positive_int, "local batch size"),
    ("--learning-rate", _positive_float, "local SGD learning rate (momentum 0.9)"),
)


def _field(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _add_command(
    subparsers, name: str, doc: str, *, extra: str = "", show_defaults: bool = True
) -> argparse.ArgumentParser:
    """Adds the subcommand `name`, documented by its module's docstring `doc`.

    The help is what follows the colon on the docstring's first line; the
    description is the rest of the docstring, then `extra`.
    """
    head, _, body = doc.partition("\n\n")
    return subparsers.add_parser(
        name,
        help=head.partition(": ")[2].rstrip("."),
        description=" ".join(f"{body} {extra}".split()),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter
        if show_defaults
        else argparse.HelpFormatter,
    )


def _add_common(parser, *, seeds: bool) -> None:
    for flag, kind, text in _SETUP_OPTIONS:
        parser.add_argument(flag, type=kind, default=defaults.DIGITS_SETUP[_field(flag)], help=text)
    parser.add_argument(
        "--num-recycled-layers",
        "--delta",
        type=_non_negative_int,
        default=2,
        help="FedLUAR's δ: layers recycled per round (the digits CNN has 4 candidates); "
        "for run: given, it also stacks LUAR on the methods that take it",
    )
    parser.add_argument(
        "--model",
        choices=defaults.DIGITS_MODELS,
        default=defaults.DIGITS_MODELS[0],
        help="the digits model: the small CNN, or the same CNN with BatchNormalization "
        "(Conv2D without bias + BatchNormalization + ReLU blocks)",
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

    fields = [_field(flag) for flag, _, _ in _SETUP_OPTIONS] + ["model"]
    return DigitsSetup(**{name: getattr(args, name) for name in fields})


def _check_clients(args) -> bool:
    if args.clients_per_round > args.num_clients:
        print(
            f"error: --clients-per-round ({args.clients_per_round}) must not exceed "
            f"--num-clients ({args.num_clients})",
            file=sys.stderr,
        )
        return False
    return True


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
