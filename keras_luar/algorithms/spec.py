"""What a method declares about itself: `AlgorithmSpec`, and what its builder is given.

A method is one module that builds its TFF process and declares an
`AlgorithmSpec`: its name and paper, its options (defaults and checks), whether
LUAR stacks on it, its official client weighting and BatchNorm rules, what it
needs of a server optimizer, and the settings a comparison gives it. The trainer,
`keras_luar.compare`, the command line and the docs read the spec from
`keras_luar.algorithms.registry`; none of them names a method.

No TensorFlow is imported here: the command line reads specs before it loads
TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

from keras_luar._validation import invalid


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword option of a method.

    Attributes:
      default: Its value when not given.
      check: ``check(name, value) -> value``: raises for a bad value, returns the
        value to use (e.g. converted to float).
      help: One line for the command line and the docs.
    """

    default: Any
    check: Callable[[str, Any], Any]
    help: str = ""


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """Everything a method's build function gets from the trainer.

    Attributes:
      model_fn: No-argument callable returning a new
        `tff.learning.models.VariableModel` (a clone of the Keras model).
      keras_model: The trainer's Keras model (for what is read off the model's
        graph, such as FedPart's layer groups).
      layout: `keras_luar.layers.ModelLayout` of the model.
      client_optimizer: A `tff.learning.optimizers.Optimizer`.
      server_optimizer: The user's server optimizer (a TFF optimizer), or None.
      num_recycled_layers: δ (0 without LUAR).
      local_steps: τ.
      seed: The run seed.
      client_weighting: The resolved client weighting.
      bn_statistics: The resolved BatchNorm statistics rule.
      options: The method's options, checked, with defaults filled in.
      upload_budget: LUAR's upload budget b instead of δ, or None.
      inner_aggregator: The user's TFF factory under LUAR, or None.
    """

    model_fn: Callable[[], Any]
    keras_model: Any
    layout: Any
    client_optimizer: Any
    server_optimizer: Any
    num_recycled_layers: int
    local_steps: int
    seed: int
    client_weighting: str
    bn_statistics: str
    options: Mapping[str, Any]
    upload_budget: float | None = None
    inner_aggregator: Any = None


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """One method `FederatedTrainer(algorithm=...)` can run.

    Attributes:
      name: The ``algorithm=`` string, e.g. ``"fedlama"``.
      title: Display name, e.g. ``"FedLAMA"``.
      reference: The paper it comes from.
      build: ``build(context: BuildContext)`` returns the TFF process: a
        `tff.learning.templates.LearningProcess` or a
        `keras_luar.algorithms.StatefulClientProcess`.
      summary: One line on what the method does (command line, docs).
      options: Its keyword options.
      luar: ``"never"`` (δ must be 0), ``"optional"`` (LUAR stacks with δ > 0)
        or ``"always"`` (the method is LUAR; δ defaults to 2).
      client_weighting: The official code's weighting, or a function of the
        options returning it.
      bn_statistics: The BatchNorm statistics rules it supports, default first.
      server_optimizer: ``"none"`` (it takes none), ``"optional"`` or
        ``"required"``.
      check: Optional ``check(options, server_optimizer_given)`` for rules
        across options (raises before anything is built).
      comparison_options: Options the digits comparison gives it (the paper's
        FEMNIST settings, which suit the small digits CNN); the CLI's option
        ``server_learning_rate`` sets a server SGD.
      in_comparison: Whether `keras-luar compare` runs it by default.
      inner_aggregator: Whether its aggregation takes a user's TFF factory
        under LUAR (``FederatedTrainer(inner_aggregator=...)``).
    """

    name: str
    title: str
    reference: str
    build: Callable[[BuildContext], Any]
    summary: str = ""
    options: Mapping[str, Option] = dataclasses.field(default_factory=dict)
    luar: Literal["never", "optional", "always"] = "never"
    client_weighting: str | Callable[[Mapping[str, Any]], str] = "uniform"
    bn_statistics: tuple[str, ...] = ("average",)
    server_optimizer: Literal["none", "optional", "required"] = "optional"
    check: Callable[[Mapping[str, Any], bool], None] | None = None
    comparison_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    in_comparison: bool = True
    inner_aggregator: bool = False

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's options: `given` checked, defaults for the rest.

        Raises:
          TypeError: For an option the method does not take, or a bad type.
          ValueError: For a bad value.
        """
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) or "no options"
            raise TypeError(
                f"FederatedTrainer got option(s) {', '.join(map(repr, unknown))} that algorithm "
                f"{self.name!r} does not take. It takes: {takes}."
            )
        resolved = {name: option.default for name, option in self.options.items()}
        for name, value in given.items():
            resolved[name] = self.options[name].check(name, value)
        return resolved

    def default_weighting(self, options: Mapping[str, Any]) -> str:
        """The client weighting of the official code for these options."""
        if callable(self.client_weighting):
            return self.client_weighting(options)
        return self.client_weighting

    def check_server_optimizer(self, given: Any) -> None:
        """Raises if the method takes no server optimizer and one is given, or needs one."""
        if self.server_optimizer == "none" and given is not None:
            raise invalid(
                "server_optimizer",
                f"None: {self.title} sets each averaged variable to the clients' mean and has "
                "no server step",
                type(given).__name__,
            )
        if self.server_optimizer == "required" and given is None:
            raise invalid(
                "server_optimizer",
                f"a server optimizer for {self.title}, e.g. tf.keras.optimizers.SGD(1.2) (the "
                "paper's FEMNIST setting) or tf.keras.optimizers.Adam(0.01)",
                None,
            )
