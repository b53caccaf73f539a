"""Shared test set-up: import path for test helpers, the slow marker, no leaked workers."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# The test folders mirror the package; some share helpers by module name
# (test_trainer's small model and data, the data sets' fixture writers), so
# every folder is importable from every other.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
for _entry in sorted(os.listdir(_HERE)):
    if os.path.isdir(os.path.join(_HERE, _entry)) and not _entry.startswith((".", "_")):
        sys.path.insert(0, os.path.join(_HERE, _entry))


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # The library stops its TFF workers at exit; stop them here too so that a
    # crashed test cannot leave one holding the terminal.
    if "keras_luar" in sys.modules:
        from keras_luar import _runtime

        _runtime.stop_workers(timeout=5.0)
