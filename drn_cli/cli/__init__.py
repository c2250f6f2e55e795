"""The ``drn`` command line: a thin layer over the library functions.

Every subcommand parses its options, calls one library function, and reports. User errors
(:class:`drn_cli.errors.DrnError`) become one line on stderr and exit status 1.
"""

from __future__ import annotations

import warnings

import typer

from .._version import __version__
from ..errors import DrnError, Interrupted
from . import adapt_cmd, eval_cmd, train_cmd, upscale_cmd, video_cmd, weights_cmd
from .common import err_console

# Typer up to 0.28 raises click's own exceptions; later releases carry a private copy of click.
# Take the classes from the typer that is installed, so both kinds are caught.
_USAGE_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_ABORT = typer.Abort

app = typer.Typer(
    name="drn",
    help="Super-resolution with Dual Regression Networks (DRN, CVPR 2020).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drn-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Super-resolution with Dual Regression Networks (DRN, CVPR 2020)."""


upscale_cmd.register(app)
video_cmd.register(app)
eval_cmd.register(app)
train_cmd.register(app)
adapt_cmd.register(app)
weights_cmd.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    err_console.print(f"warning: {message}", markup=False, style="yellow")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit status."""
    warnings.showwarning = _show_warning
    try:
        rv = app(args=argv, prog_name="drn", standalone_mode=False)
    except _USAGE_ERRORS as exc:
        exc.show()
        return exc.exit_code
    except (_ABORT, KeyboardInterrupt):
        err_console.print("drn: interrupted", markup=False)
        return 130
    except Interrupted as exc:
        err_console.print(f"drn: {exc}", markup=False, soft_wrap=True)
        return 130
    except DrnError as exc:
        err_console.print(f"drn: error: {exc}", markup=False, soft_wrap=True)
        return 1
    except BrokenPipeError:
        return 1
    if rv == 130:  # typer turns KeyboardInterrupt into Exit(130)
        err_console.print("drn: interrupted", markup=False)
    return rv if isinstance(rv, int) else 0
