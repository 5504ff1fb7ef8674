"""``podrun emulator`` / ``python -m podrun.emulator``: the options, checked, then the server.

Kept free of starlette imports at module level so the CLI loads without the extra. Secrets
never come from the command line (every local user can read it in ``ps``): accounts come from
a users file or ``$PODRUN_EMULATOR_USERS``, the token key from ``$PODRUN_EMULATOR_SECRET``,
and both variables are removed from the environment before anything is started."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import typer

ENV_USERS, ENV_SECRET = "PODRUN_EMULATOR_USERS", "PODRUN_EMULATOR_SECRET"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def emulator(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default: the emulator has no TLS)"),
    port: int = typer.Option(8000, help="TCP port"),
    allow_remote: bool = typer.Option(False, "--allow-remote", help="allow a --host that is not loopback (plain HTTP: warns)"),
    user: list[str] | None = typer.Option(None, "--user", hidden=True),
    users_file: Path | None = typer.Option(
        None, help=f"file of NAME:PASSWORD lines (mode 0600), re-read when it changes; or set ${ENV_USERS} to such lines"
    ),
    root: Path | None = typer.Option(None, help="where volumes, pods and images live (default: $PODRUN_HOME/emulator)"),
    token_lifetime: float = typer.Option(300.0, help="seconds an access token stays valid"),
    refresh_lifetime: float = typer.Option(86400.0, help="seconds a refresh token stays valid"),
    driver: str = typer.Option("auto", envvar="PODRUN_LOCAL_DRIVER",
                               help="LocalPlatform pod driver: auto (container where podman runs), container or process"),
    unsafe_host_pods: bool = typer.Option(False, "--unsafe-host-pods", envvar="PODRUN_UNSAFE_HOST_PODS",
                                          help="UNSAFE: allow the 'process' driver, whose pods run on this host with its "
                                               "rights, its files and every tenant's volumes in reach"),
    max_uplink_bytes: int = typer.Option(
        2 * 1000**3, help="largest total size of one uplink call (CG2 EM: 2 GB; flight model: 5 MB)"
    ),
    busy_lock: bool = typer.Option(
        True, "--busy-lock/--no-busy-lock", help="answer a user's concurrent calls 423 LOCKED, as the EM does"
    ),
    header_timeout: float = typer.Option(10.0, help="seconds a client has to send a request's head"),
    body_timeout: float = typer.Option(30.0, help="longest pause, in seconds, while a request body arrives"),
    keep_alive_timeout: float = typer.Option(5.0, help="seconds an idle connection is kept open"),
    max_connections: int = typer.Option(512, help="connections served at once; more are closed at once"),
    chaos_latency: float = typer.Option(0.0, help="add up to this many seconds before each answer"),
    chaos_bandwidth: int = typer.Option(0, help="cap each transfer at this many bytes/s (0: no cap)"),
    chaos_locked_rate: float = typer.Option(0.0, help="share of calls answered 423 LOCKED"),
    chaos_error_rate: float = typer.Option(0.0, help="share of calls answered 500"),
    chaos_drop_rate: float = typer.Option(0.0, help="share of calls whose connection is dropped"),
    chaos_seed: int | None = typer.Option(None, help="seed for reproducible chaos"),
    log_level: str = typer.Option("warning", help=f"log level: {', '.join(LOG_LEVELS)}"),
) -> None:
    """Serve the EM API on top of the local platform (one isolated user space per account)."""
    if user:
        raise typer.BadParameter(
            "passwords on the command line are visible to every local user (ps, /proc): put "
            f"NAME:PASSWORD lines in a --users-file (mode 0600) or in ${ENV_USERS}",
            param_hint="--user",
        )
    try:
        from .app import EmulatorConfig
        from .auth import UserStore, parse_users
        from .chaos import ChaosConfig
        from .server import Timeouts, bind_warning, serve
    except ImportError as exc:  # the emulator extra is missing
        raise typer.BadParameter(f"the emulator needs its extra: pip install 'podrun[emulator]' ({exc})") from None
    from ..platform.local import default_home

    level = log_level.lower()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"{log_level!r}: choose one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    try:
        fixed = parse_users(os.environ.pop(ENV_USERS, ""), strict=True)
        chaos = ChaosConfig(chaos_latency, chaos_bandwidth, chaos_locked_rate, chaos_error_rate, chaos_drop_rate, chaos_seed)
        timeouts = Timeouts(header_timeout, body_timeout, keep_alive_timeout, max_connections)
        warning = bind_warning(host, allow_remote)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if not fixed and users_file is None:
        raise typer.BadParameter(f"give the accounts in a --users-file (NAME:PASSWORD lines) or in ${ENV_USERS}")
    if users_file is not None and users_file.exists() and stat.S_IMODE(users_file.stat().st_mode) & 0o077:
        typer.echo(f"WARNING: {users_file} can be read by other users; chmod 600 it", err=True)
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
        busy_lock=busy_lock,
        token_secret=os.environ.pop(ENV_SECRET, None),
        chaos=chaos,
    )
    if warning:
        typer.echo(warning, err=True)
    typer.echo(f"podrun EM emulator on http://{host}:{port} (root {config.root}; docs at /docs)", err=True)
    serve(config, host, port, level, timeouts)


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
            "(podrun images prepare) for isolated pods, or start the emulator with --unsafe-host-pods to accept this.")
    typer.echo("WARNING: --unsafe-host-pods: pods run on this host, NOT isolated; every tenant can read every other "
               "tenant's volumes and this machine's files. Never expose this emulator to untrusted users.", err=True)
    return chosen
