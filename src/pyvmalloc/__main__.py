"""``python -m pyvmalloc``: the same command line as ``pyvmalloc``."""

import sys

try:
    from pyvmalloc.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: exit as main() would
    sys.exit(130)

sys.exit(main())
