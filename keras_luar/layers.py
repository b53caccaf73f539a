"""Which variables of a model are recycling candidates ("layers").

FedLUAR recycles whole parameter tensors. Following the authors' code, a
candidate is one trainable variable of rank >= 2: convolution and dense
kernels, embedding matrices, recurrent kernels, attention projections. Kernel
and bias are separate variables. Everything else is never recycled:

* rank-0/1 trainable variables (biases, BatchNorm and LayerNorm gamma/beta)
  are sent and averaged every round;
* non-trainable variables (BatchNorm moving mean/variance, frozen layers) are
  not part of the uploaded update; `bn_statistics` says whether they are
  averaged across clients every round (``"average"``, as the FedLUAR code does)
  or kept by each client (``"local"``, as Fling's FedPart does).

Candidates are found by shape and trainability, never by parsing variable
names, so the rule holds for any Keras layer, including custom ones.

The order of variables is the order TFF uses for
`tff.learning.models.ModelWeights`: `model.trainable_variables` then
`model.non_trainable_variables`; for a bare TFF type it is the order of
`tf.nest.flatten` over the type's Python structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import tensorflow as tf

from keras_luar._types import BnStatistics
from keras_luar._validation import check_bn_statistics, check_built_model

Role = Literal["candidate", "always_sent", "averaged", "local"]


@dataclasses.dataclass(frozen=True)
class VariableInfo:
    """One variable of a model, as FedLUAR sees it.

    Attributes:
      name: Stable name: the Keras variable name without the ``:0`` suffix, or
        ``trainable/<i>`` / ``non_trainable/<i>`` for an unnamed TFF type.
      shape: Static shape.
      dtype: TensorFlow dtype name, e.g. ``"float32"``.
      size: Number of scalars (the product of `shape`).
      trainable: Whether the variable is trained (and hence uploaded).
      role: ``"candidate"`` (may be recycled), ``"always_sent"`` (trainable,
        never recycled), ``"averaged"`` (non-trainable, averaged every round) or
        ``"local"`` (non-trainable, not averaged).
      index: Position among the trainable or among the non-trainable variables.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    size: int
    trainable: bool
    role: Role
    index: int

    @property
    def nbytes(self) -> int:
        """Size in bytes at the variable's own dtype."""
        return self.size * tf.as_dtype(self.dtype).size


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """The variables of a model split into candidates and the always-sent rest.

    Attributes:
      trainable: The trainable variables in TFF's order.
      non_trainable: The non-trainable variables in TFF's order.
      bn_statistics: How non-trainable variables are handled.
    """

    trainable: tuple[VariableInfo, ...]
    non_trainable: tuple[VariableInfo, ...] = ()
    bn_statistics: BnStatistics = "average"

    @property
    def candidates(self) -> tuple[VariableInfo, ...]:
        """The recycling candidates, in trainable order."""
        return tuple(v for v in self.trainable if v.role == "candidate")

    @property
    def always_sent(self) -> tuple[VariableInfo, ...]:
        """Trainable variables that are uploaded every round (rank < 2)."""
        return tuple(v for v in self.trainable if v.role == "always_sent")

    @property
    def candidate_names(self) -> tuple[str, ...]:
        """Names of the candidates; recycle masks are aligned with this list."""
        return tuple(v.name for v in self.candidates)

    @property
    def candidate_indices(self) -> tuple[int, ...]:
        """Positions of the candidates among the trainable variables."""
        return tuple(v.index for v in self.candidates)

    @property
    def num_candidates(self) -> int:
        """L, the number of recycling candidates."""
        return len(self.candidates)

    @property
    def candidate_sizes(self) -> tuple[int, ...]:
        """Number of parameters of each candidate."""
        return tuple(v.size for v in self.candidates)

    @property
    def trainable_size(self) -> int:
        """Parameters uploaded per client in a round without recycling (FedAvg)."""
        return sum(v.size for v in self.trainable)

    @property
    def trainable_bytes(self) -> int:
        """Bytes uploaded per client in a round without recycling (FedAvg)."""
        return sum(v.nbytes for v in self.trainable)

    def summary(self) -> str:
        """A printable table of the variables and their roles."""
        rows = [("name", "shape", "params", "role")]
        for v in self.trainable + self.non_trainable:
            rows.append((v.name, str(list(v.shape)), str(v.size), v.role))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.append(
            f"{self.num_candidates} candidates ({sum(self.candidate_sizes):,} params), "
            f"{len(self.always_sent)} always sent, {self.trainable_size:,} trainable params"
        )
        return "\n".join(lines)


def is_candidate(shape: Sequence[int], dtype: tf.dtypes.DType | str, trainable: bool) -> bool:
    """The FedLUAR rule: a trainable floating-point variable of rank >= 2."""
    return bool(trainable) and len(shape) >= 2 and tf.as_dtype(dtype).is_floating


def _info(name, shape, dtype, trainable, index, bn_statistics) -> VariableInfo:
    shape = tuple(int(d) for d in shape)
    if trainable:
        role = "candidate" if is_candidate(shape, dtype, True) else "always_sent"
    else:
        role = "averaged" if bn_statistics == "average" else "local"
    return VariableInfo(
        name=name,
        shape=shape,
        dtype=tf.as_dtype(dtype).name,
        size=int(np.prod(shape, dtype=np.int64)),
        trainable=trainable,
        role=role,
        index=index,
    )


def _unique(names: list[str]) -> list[str]:
    # The first occurrence of a name keeps it; later ones get the first free
    # "<name>#<k>", free meaning neither given in `names` nor generated before
    # (so ["a", "a", "a#1"] gives ["a", "a#2", "a#1"], not a repeated "a#1").
    taken = set(names)
    seen: set[str] = set()
    out = []
    for n in names:
        if n in seen:
            k = 1
            while f"{n}#{k}" in taken:
                k += 1
            n = f"{n}#{k}"
            taken.add(n)
        seen.add(n)
        out.append(n)
    return out


def _layout(names, trainable, non_trainable, bn_statistics) -> ModelLayout:
    """Builds a layout from names (trainable first) and objects with shape/dtype."""
    names = _unique(names)
    t_infos = tuple(
        _info(names[i], v.shape, v.dtype, True, i, bn_statistics) for i, v in enumerate(trainable)
    )
    nt_infos = tuple(
        _info(names[len(trainable) + i], v.shape, v.dtype, False, i, bn_statistics)
        for i, v in enumerate(non_trainable)
    )
    return ModelLayout(t_infos, nt_infos, bn_statistics)


def _variable_name(variable: tf.Variable) -> str:
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def describe_model(
    model: tf.keras.Model, *, bn_statistics: BnStatistics = "average"
) -> ModelLayout:
    """Lists the recycling candidates of a Keras model.

    Args:
      model: A built `tf.keras.Model` (Sequential, functional or subclassed).
      bn_statistics: ``"average"`` to average non-trainable variables such as
        BatchNorm moving statistics every round (FedLUAR's behaviour) or
        ``"local"`` to leave them out of aggregation.

    Returns:
      A `ModelLayout` in TFF's variable order.

    Raises:
      ValueError: If the model is not built or `bn_statistics` is unknown.

    Examples:
      >>> import tensorflow as tf
      >>> from keras_luar.layers import describe_model
      >>> model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3, name="dense")])
      >>> describe_model(model).candidate_names
      ('dense/kernel',)
    """
    check_bn_statistics(bn_statistics)
    check_built_model(model)
    trainable = list(model.trainable_variables)
    non_trainable = list(model.non_trainable_variables)
    names = [_variable_name(v) for v in trainable + non_trainable]
    return _layout(names, trainable, non_trainable, bn_statistics)


def _leaf_specs(type_spec) -> list[tf.TensorSpec]:
    import tensorflow_federated as tff

    specs = tff.types.type_to_tf_tensor_specs(type_spec)
    return tf.nest.flatten(specs)


def describe_weights_type(
    value_type: object,
    *,
    names: Sequence[str] | None = None,
    bn_statistics: BnStatistics = "average",
) -> ModelLayout:
    """Lists the recycling candidates of a TFF weights type.

    Args:
      value_type: A TFF type: either the type of
        `tff.learning.models.ModelWeights` (with ``trainable`` and
        ``non_trainable``) or a structure of tensors that are all trainable (the
        ``value_type`` an aggregation factory receives in TFF's builders).
      names: Optional names for the variables in flattened order (trainable
        first); by default ``trainable/<i>`` and ``non_trainable/<i>``.
      bn_statistics: As in `describe_model`.

    Returns:
      A `ModelLayout`.

    Raises:
      TypeError: If `value_type` holds non-tensor leaves or unknown shapes.
      ValueError: If `names` has the wrong length.
    """
    import tensorflow_federated as tff

    check_bn_statistics(bn_statistics)
    value_type = tff.types.to_type(value_type)
    if not tff.types.is_structure_of_tensors(value_type):
        raise TypeError(
            "Invalid value for argument `value_type`. Expected a structure of tensors. "
            f"Received: value_type={value_type}"
        )
    field_names = []
    if isinstance(value_type, tff.StructType):
        field_names = [n for n, _ in tff.structure.iter_elements(value_type)]
    if field_names and set(field_names) == {"trainable", "non_trainable"}:
        trainable = _leaf_specs(value_type.trainable)
        non_trainable = _leaf_specs(value_type.non_trainable)
    else:
        trainable, non_trainable = _leaf_specs(value_type), []
    for spec in trainable + non_trainable:
        if not spec.shape.is_fully_defined():
            raise TypeError(
                "Invalid value for argument `value_type`. Expected tensors with fully "
                f"defined shapes. Received a tensor of shape {spec.shape} in {value_type}"
            )
    total = len(trainable) + len(non_trainable)
    if names is None:
        names = [f"trainable/{i}" for i in range(len(trainable))] + [
            f"non_trainable/{i}" for i in range(len(non_trainable))
        ]
    elif len(names) != total:
        raise ValueError(
            f"Invalid value for argument `names`. Expected {total} names, one per "
            f"variable. Received: {len(names)} names"
        )
    return _layout(list(names), trainable, non_trainable, bn_statistics)
