"""The ``podrun`` command: a thin typer app; each command lives with the layer it serves."""

from __future__ import annotations

import typer

from .emulator.command import emulator

app = typer.Typer(help="podrun: offload Python functions to pods (CG2 via the EM API, or locally).", no_args_is_help=True)
app.command("emulator")(emulator)


@app.callback()
def _root() -> None:
    """podrun's command line."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
