"""CLI commands for parameter files: ``xmargin keys generate`` and ``xmargin verify``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

keys_app = typer.Typer(help="Ed25519 signing keys for parameter files.", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the key pair (created if missing).")
    ] = Path("keys"),
) -> None:
    """Create a new Ed25519 key pair (private key written with mode 0600)."""
    from margin.keys import generate_keypair

    private, public = generate_keypair(out)
    typer.echo(f"private key: {private}")
    typer.echo(f"public key:  {public}")


def verify_command(
    file: Annotated[
        Path,
        typer.Argument(help="params.json, manifest.json, a version folder, or a root with latest."),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="PEM public key the manifest must be signed with."),
    ] = None,
) -> None:
    """Check schema, checksums, signature and bounds; exit non-zero naming the first failure."""
    from margin import keys, params

    key = keys.load_public_key(public_key) if public_key is not None else None
    loaded = params.verify(file, key)
    signed = "signature checked against the given key" if key else "checksums checked"
    typer.echo(
        f"OK: {len(loaded.underlyings)} underlyings as of {loaded.as_of} "
        f"(schema {loaded.schema_version}, {signed})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the CLI."""
    app.add_typer(keys_app, name="keys")
    app.command("verify")(verify_command)
