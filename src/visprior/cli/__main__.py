"""``python -m visprior.cli``, e.g. under ``torchrun ... -m visprior.cli seg train``."""

import sys

from visprior.cli.app import main

sys.exit(main())
