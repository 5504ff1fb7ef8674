"""``podrun emulator`` / ``python -m podrun.emulator``: the options, checked, then uvicorn.

Kept free of starlette imports at module level so the CLI loads without the extra."""

from __future__ import annotations

import logging
from pathlib import Path

import typer


def emulator(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default: the emulator has no TLS)"),
    port: int = typer.Option(8000, help="TCP port"),
    user: list[str] | None = typer.Option(None, "--user", help="NAME:PASSWORD, repeatable"),
    users_file: Path | None = typer.Option(None, help="file of NAME:PASSWORD lines, re-read when it changes"),
    root: Path | None = typer.Option(None, help="where volumes, pods and images live (default: $PODRUN_HOME/emulator)"),
    token_lifetime: float = typer.Option(300.0, help="seconds an access token stays valid"),
    refresh_lifetime: float = typer.Option(86400.0, help="seconds a refresh token stays valid"),
    driver: str = typer.Option("auto", envvar="PODRUN_LOCAL_DRIVER",
                               help="LocalPlatform pod driver: auto (container where podman runs), container or process"),
    unsafe_host_pods: bool = typer.Option(False, "--unsafe-host-pods", envvar="PODRUN_UNSAFE_HOST_PODS",
                                          help="UNSAFE: allow the 'process' driver, whose pods run on this host with its rights, "
                                               "its files and every tenant's volumes in reach"),
    max_uplink_bytes: int = typer.Option(2 * 1000**3, help="largest total size of one uplink call (CG2 EM: 2 GB; flight model: 5 MB)"),
    chaos_latency: float = typer.Option(0.0, help="add up to this many seconds before each answer"),
    chaos_bandwidth: int = typer.Option(0, help="cap each transfer at this many bytes/s (0: no cap)"),
    chaos_locked_rate: float = typer.Option(0.0, help="share of calls answered 423 LOCKED"),
    chaos_error_rate: float = typer.Option(0.0, help="share of calls answered 500"),
    chaos_drop_rate: float = typer.Option(0.0, help="share of calls whose connection is dropped"),
    chaos_seed: int | None = typer.Option(None, help="seed for reproducible chaos"),
    log_level: str = typer.Option("warning", help="uvicorn log level"),
) -> None:
    """Serve the EM API on top of the local platform (one isolated user space per account)."""
    try:
        import uvicorn

        from .app import EmulatorConfig, create_app
        from .auth import UserStore, parse_user
        from .chaos import ChaosConfig
    except ImportError as exc:  # the emulator extra is missing
        raise typer.BadParameter(f"the emulator needs its extra: pip install 'podrun[emulator]' ({exc})") from None
    from ..platform.local import default_home

    try:
        fixed = dict(parse_user(spec) for spec in user or [])
        chaos = ChaosConfig(chaos_latency, chaos_bandwidth, chaos_locked_rate, chaos_error_rate, chaos_drop_rate, chaos_seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not fixed and users_file is None:
        raise typer.BadParameter("give at least one --user NAME:PASSWORD or a --users-file")
    if token_lifetime <= 0 or max_uplink_bytes <= 0:
        raise typer.BadParameter("--token-lifetime and --max-uplink-bytes must be positive")
    driver = _pod_driver(driver, unsafe_host_pods)
    config = EmulatorConfig(
        root=(root or default_home() / "emulator").resolve(),
        users=UserStore(fixed=fixed, users_file=users_file.resolve() if users_file else None),
        token_lifetime=token_lifetime,
        refresh_lifetime=refresh_lifetime,
        driver=driver,
        max_uplink_bytes=max_uplink_bytes,
        chaos=chaos,
    )
    config.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=log_level.upper())
    typer.echo(f"podrun EM emulator on http://{host}:{port} (root {config.root}; docs at /docs)", err=True)
    uvicorn.run(create_app(config), host=host, port=port, log_level=log_level, lifespan="on")


def _pod_driver(driver: str, unsafe_host_pods: bool) -> str:
    """The emulator's tenants are hostile: their pods run on an isolating driver, never on the
    host (no silent fallback), unless the operator says --unsafe-host-pods."""
    from ..errors import PlatformError
    from ..platform.local import drivers

    try:
        drivers.check_driver(driver)
        chosen = drivers.effective(driver)
    except (ValueError, PlatformError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if chosen in drivers.ISOLATING:
        return chosen
    if not unsafe_host_pods:
        raise typer.BadParameter(
            f"pod driver {driver!r} gives {chosen!r}, which runs tenants' pods on this host with its rights (any tenant "
            "reads the others' volumes and this machine's files). Install podman and prepare images "
            "(podrun images prepare) for isolated pods, or start the emulator with "
            "--unsafe-host-pods to accept this.")
    typer.echo("WARNING: --unsafe-host-pods: pods run on this host, NOT isolated; every tenant can read every other "
               "tenant's volumes and this machine's files. Never expose this emulator to untrusted users.", err=True)
    return chosen
