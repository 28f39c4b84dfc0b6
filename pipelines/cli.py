"""The ``xmargin`` command line.

Each area of the product registers its commands from its own module in
:mod:`pipelines.commands`; heavy libraries are imported inside the commands so that
``xmargin --help`` stays fast. Errors a user can cause (bad data, bad config, bad files)
are printed as one line and exit with code 2; set ``XMARGIN_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from pipelines.commands import backtest, conformance, data, evaluate, params, run

app = typer.Typer(
    name="xmargin",
    help="Adaptive cross-margin pipeline: data, volatility forecasts, margin parameters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (data, evaluate, backtest, params, conformance, run):
    module.register(app)

_err = Console(stderr=True)

# Exceptions that mean "the input is wrong", not "the program is wrong".
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)


def main() -> None:
    """Run the CLI, turning user-caused errors into one line and exit code 2."""
    try:
        app()
    except USER_ERRORS as exc:
        if os.environ.get("XMARGIN_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        _err.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
