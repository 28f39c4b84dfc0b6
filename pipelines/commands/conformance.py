"""CLI commands: conformance — reproduce the margin published by existing systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

conformance_app = typer.Typer(
    name="conformance",
    help="Reproduce published margin test vectors of existing exchanges.",
    no_args_is_help=True,
)


@conformance_app.command("derive")
def derive(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Derive PMRM_2 case files (JSON), e.g. conformance/derive_pmrm2/*.json."
        ),
    ],
    rtol: Annotated[float, typer.Option(help="Relative tolerance on IM and MM.")] = 1e-6,
    atol: Annotated[
        float, typer.Option(help="Absolute tolerance on IM and MM (near zero).")
    ] = 1e-6,
) -> None:
    """Run Derive's PMRM_2 on each case and print one JSON line per case.

    Each line is ``{"case", "im", "mm", "expected_im", "expected_mm", "ok"}``; the exit code
    is 1 when any case misses the tolerance. Every file is read and validated before the
    first line is printed.
    """
    import json

    from margin.profiles.derive_cases import load_derive_case, within_tolerance
    from margin.profiles.derive_pmrm2 import derive_pmrm2_margin

    cases = [load_derive_case(path) for path in files]
    failed = 0
    for case in cases:
        result = derive_pmrm2_margin(case.portfolio, case.parameters)
        ok = within_tolerance(result.im, case.expected.im, rtol, atol) and within_tolerance(
            result.mm, case.expected.mm, rtol, atol
        )
        failed += not ok
        line = {
            "case": case.name,
            "im": result.im,
            "mm": result.mm,
            "expected_im": case.expected.im,
            "expected_mm": case.expected.mm,
            "ok": ok,
        }
        typer.echo(json.dumps(line))
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add the ``conformance`` sub-commands to the CLI."""
    app.add_typer(conformance_app)
