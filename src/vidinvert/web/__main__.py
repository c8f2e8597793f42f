"""``python -m vidinvert.web [serve options]``: the same as ``vidinvert serve`` (its options from the table)."""

import argparse
import sys

from ..errors import VidinvertError
from ..options import SERVE, add_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidinvert.web", description=__doc__.splitlines()[0])
    add_options(parser, SERVE)
    try:
        args = parser.parse_args(argv)
        args.command = SERVE
        from .serve import serve

        return serve(args)
    except VidinvertError as err:
        print(f"vidinvert: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
