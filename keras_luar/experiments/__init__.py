"""Experiments on the embedded digits and the paper's benchmarks, built on the trainer.

* `digits`: the digits experiment's models, settings, data and trainers;
* `methods`, `results`, `compare`: comparing methods in the shape of the paper's
  Table 1 (`keras-luar compare`, `keras-luar quickstart`);
* `keras_luar.presets`: the paper's benchmarks as a table of specs.
"""
