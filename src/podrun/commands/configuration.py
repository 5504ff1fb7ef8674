"""``podrun config show|contexts``: the effective configuration and where each value came from."""

from __future__ import annotations

import typer

from ..client import config
from ._common import note, out, table

app = typer.Typer(help="The configuration: contexts file, environment, defaults.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Show the effective settings with their sources (configure > environment > context > default).
    Passwords are never printed."""
    resolved = config.effective()
    rows = [["config file", f"{resolved.path}" + ("" if resolved.path.is_file() else " (absent)"), ""],
            ["context", resolved.context or "(none)", resolved.context_source]]
    rows += [[name, resolved.shown(name), resolved.sources.get(name, "")] for name in resolved.sources]
    if resolved.platform == "local":
        from ..errors import PlatformError
        from ..platform.local import drivers

        driver = str(resolved.values.get("driver") or "auto")
        try:
            pods = drivers.describe(driver)
        except (ValueError, PlatformError) as exc:  # a bad driver name, or an engine that cannot run
            pods = f"none: {exc}"
        rows.append(["pods run as", pods, f"driver {driver}"])
    out().print(table(f"podrun configuration ({resolved.platform})", ["setting", "value", "from"], rows))
    note(f"podrun home (journal, caches, local volumes): {config.home()}")


@app.command("contexts")
def contexts() -> None:
    """List the contexts of the configuration file; '*' marks the one in use."""
    path = config.config_path()
    known = config.contexts(config.load_file(path))
    current = config.effective().context
    rows = [["*" if name == current else "", name, table_.get("platform", "local"), table_.get("url", "")]
            for name, table_ in sorted(known.items())]
    out().print(table(f"contexts in {path}", ["", "name", "platform", "url"], rows))
    if not known:
        note(f'no contexts yet: add [contexts.NAME] tables to {path} (see README, "Command line")')
