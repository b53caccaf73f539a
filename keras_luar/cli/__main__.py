"""``python -m keras_luar.cli``: the `keras-luar` command."""

import sys

from keras_luar.cli import main

sys.exit(main())
