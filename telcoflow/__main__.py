"""``python -m telcoflow``: the ``telcoflow`` command."""

import sys

from ._cli import main

sys.exit(main())
