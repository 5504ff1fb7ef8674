"""The ``podrun`` command's groups, one module each; ``cli.py`` only assembles them."""

from __future__ import annotations

import typer

from . import bench, configuration, files, gc, images, jobs, objects, pods, volumes


def register(app: typer.Typer) -> None:
    """Add every command group to the root app."""
    app.command("nodes")(pods.nodes)
    app.add_typer(files.app, name="files")
    app.add_typer(images.app, name="images")
    app.add_typer(pods.app, name="pods")
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(objects.app, name="objects")
    app.add_typer(volumes.app, name="volumes")
    app.command("gc")(gc.gc)
    app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench.bench)
    app.add_typer(configuration.app, name="config")
