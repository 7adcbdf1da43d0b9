"""``python -m pagesync_model`` is ``pagesync-sim``."""
import sys

from .cli import main

sys.exit(main())
