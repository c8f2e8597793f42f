"""``python -m vidinvert.web [serve options]``: the same as ``vidinvert serve``."""

import sys

from ..cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(["serve", *sys.argv[1:]]))
