"""The paper's Table 1 on the embedded digits data: every method, mean ± std over seeds.

A thin wrapper of `keras-luar compare` (same arguments, same defaults, same library
call, `keras_luar.compare.compare_methods`): it trains FedAvg, FedLUAR, FedLAMA,
LBGM, FedPart, FedPAQ, FedProx and FedOpt (the last three also with LUAR) on the
digits CNN, prints the Markdown table and writes compare.md, compare.csv,
histories.json and compare.png (accuracy against cumulative upload) to --out.

    uv run python benchmarks/compare_methods.py --seeds 0 1 2 [--out compare_results]
    uv run python benchmarks/compare_methods.py --methods fedavg fedluar --rounds 10
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_luar import cli


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``keras-luar compare`` with `argv` (default: this script's arguments)."""
    return cli.main(["compare", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
