"""The console-script entry point, kept import-light so that Ctrl-C during start-up exits cleanly."""

from __future__ import annotations

import sys


def run() -> None:
    """Start the ``drn`` command line; exit 130 without a traceback on Ctrl-C, even while importing."""
    try:
        from .cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("drn: interrupted\n")
        code = 130
    sys.exit(code)
