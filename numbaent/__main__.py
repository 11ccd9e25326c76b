"""``python -m numbaent``: the same as the ``numbaent`` command."""

import sys

from numbaent.cli import main

if __name__ == "__main__":
    sys.exit(main())
