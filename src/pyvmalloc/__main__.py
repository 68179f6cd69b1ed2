"""``python -m pyvmalloc``: the same command line as ``pyvmalloc``."""

import sys

from pyvmalloc.cli import main

sys.exit(main())
