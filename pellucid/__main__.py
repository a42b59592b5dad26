"""``python -m pellucid``: the same as the ``pellucid`` command."""
import sys

from .cli import main

sys.exit(main())
