"""Runs TFF computations in this Python process's TensorFlow runtime (CPU or GPU).

TFF 0.87 executes every computation in its C++ ``worker_binary``, which is
built without CUDA. `InProcessContext` is a TFF execution context that runs
the very same computations here instead:

1. It compiles a computation as TFF's native C++ context does, once per
   computation: intrinsics such as the weighted mean become
   ``federated_aggregate`` over TensorFlow blocks, and the whole is brought
   to call-dominant form. TFF's context also runs a static, aggressive
   Grappler pass over every block and then switches Grappler off inside
   them; here TensorFlow's own function optimizer runs instead, as for any
   `tf.function`, which made local training about 10 % faster on a CPU
   (``tff_grappler=True`` restores TFF's pass). (``context``)
2. It walks the compiled building blocks in Python. Federated values are
   plain Python values: one value at the server, a list with one entry per
   client at the clients. The handful of intrinsics left after desugaring
   (broadcast, map, apply, zip, aggregate, value) are a few lines each, with
   the C++ runtime's semantics (``federated_aggregate`` accumulates the
   clients in order, from ``zero``). (``interpreter``, ``values``)
3. Each TensorFlow block (local training, the LUAR server step, ...) becomes
   one concrete function, built once and never retraced: the part of its graph
   that the init op needs, then the part its results need, with the
   parameters mapped to the function's inputs, as TFF's runtime runs a block
   (the init op, then the results). Tensors stay where TensorFlow placed them (on the GPU when there is one)
   between the blocks of a call; client datasets are handed over as dataset
   variants, so no data is serialized or copied per round. (``blocks``,
   ``graph_defs``)
4. By default the walk of step 2 is itself traced, once per computation and
   number of clients, into one `tf.function` that calls the blocks' concrete
   functions in the walk's order. A round is then one TensorFlow call: the
   Python walk, the ~10 small per-client aggregation blocks and their call
   overheads are gone from the round time. TensorFlow runs a function's
   stateful calls in program order, so the blocks run in the order the Python
   walk runs them, each client's variables initialized before its call; the
   result is the same as the walk's, bit for bit (``trace=False`` keeps the
   walk, which the worker pool uses). With ``parallel_clients=N`` client i
   runs on copy i mod N of a block's variables; each copy's calls are ordered
   by a variable of its own, and calls on different copies, which share
   nothing, may run at the same time. (``tracing``)

Nothing here knows about any algorithm: every method runs through it
unchanged, which is what makes the two execution paths agree.
"""

from __future__ import annotations

from keras_luar.backends.in_process.context import InProcessContext
from keras_luar.backends.in_process.interpreter import BlockFunction

__all__ = ["BlockFunction", "InProcessContext"]
