"""``python -m tfaa ...``: the ``tfaa`` command line."""
import sys

from tfaa.cli import main

if __name__ == "__main__":
    sys.exit(main())
