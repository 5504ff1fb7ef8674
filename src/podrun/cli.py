"""The ``podrun`` command: a thin typer app; each command group lives in ``commands/``."""

from __future__ import annotations

import typer

from .client import config
from .commands import register
from .commands._common import PodrunGroup
from .emulator.command import emulator

app = typer.Typer(
    cls=PodrunGroup,
    help="podrun: offload Python functions to pods (CG2 via the EM API, or locally).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,  # a traceback must never dump a password held in a local
)
app.command("emulator")(emulator)
register(app)


@app.callback()
def _root(
    ctx: typer.Context,
    context: str | None = typer.Option(
        None, "--context", help="a context of ~/.config/podrun/config.toml (else PODRUN_CONTEXT, else current-context)"
    ),
) -> None:
    """podrun's command line. Settings: configure() > PODRUN_* variables > the context > defaults."""
    config.configure(context=context)  # each invocation starts from the file and the environment
    ctx.call_on_close(config.reset)  # and closes the platform's connections when it ends


def main() -> None:
    app()


if __name__ == "__main__":
    main()
