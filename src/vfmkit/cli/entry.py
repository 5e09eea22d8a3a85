"""The ``vfm`` console script.

It imports the CLI (typer, torch, every task: seconds) inside its ``try``, so Ctrl-C before the imports finish
prints "interrupted" and exits with 130 like Ctrl-C at any later stage (:mod:`vfmkit.cli.failures`), instead of a
KeyboardInterrupt traceback. This module and ``vfmkit/__init__.py`` import nothing heavy themselves.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Import the CLI and run it on the process arguments."""
    try:
        from vfmkit.cli.main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
