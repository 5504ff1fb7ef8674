"""``podrun pods run|status|stop`` and ``podrun nodes``: raw pods, as the EM API runs them."""

from __future__ import annotations

import typer

from ..client.stop import stop_pod, wait_pod_end
from ..platform.types import NODES, PodSpec, PodState
from ._common import note, out, platform, pod_name_option, table

app = typer.Typer(help="Run a pod of any image and follow its state.", no_args_is_help=True)


def parse_envs(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` → ``{"K": "V"}``; a pair without '=' is a usage error."""
    envs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env takes KEY=VALUE, not {pair!r}")
        envs[key] = value
    return envs


def show_state(state: PodState, pod_name: str | None) -> None:
    rows = [["phase", state.phase]] + [[key, value] for key, value in state.detail.items()]
    out().print(table(f"pod {pod_name or '(default)'}", ["field", "value"], rows))


@app.command("run")
def run(
    image: str = typer.Argument(..., help="image to run, e.g. python:3.11-slim or one you built or loaded"),
    node: str = typer.Option("MPU", "--node", "-n", help=f"one of {', '.join(NODES)}"),
    max_duration: float = typer.Option(10, "--max-duration", "-m", help="minutes before the pod is killed"),
    command: str | None = typer.Option(None, "--command", "-c", help="the container's command (split without a shell)"),
    args: list[str] = typer.Option([], "--arg", help="one argument of the command; repeat for more"),
    env: list[str] = typer.Option([], "--env", "-e", help="KEY=VALUE in the pod's environment; repeatable"),
    port: list[int] = typer.Option([], "--port", help="a port to expose; repeatable"),
    scheduled_time: str | None = typer.Option(None, "--scheduled-time", help="ISO time to start at (default: now)"),
    wait: bool = typer.Option(False, "--wait", "-w", help="wait for the pod to end and show its final state"),
    timeout: float = typer.Option(600, "--timeout", help="seconds --wait waits at most"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Run a pod (replacing a running pod of the same pod name)."""
    spec = PodSpec(image=image, node=node, max_duration=max_duration, command=command, args=list(args),
                   envs=parse_envs(env), ports=list(port), scheduled_time=scheduled_time, pod_name=pod_name)
    platform().run_pod(spec)
    note(f"pod {pod_name or '(default)'} scheduled: {image} on {spec.node}, at most {max_duration:g} min")
    if wait:
        state = wait_pod_end(platform(), pod_name, timeout)
        show_state(state, pod_name)
        if not state.is_terminal or state.exit_code != 0:
            raise typer.Exit(1)


@app.command("status")
def status(
    pod_name: str | None = pod_name_option(),
    wait: bool = typer.Option(False, "--wait", "-w", help="wait for the pod to end first"),
    timeout: float = typer.Option(600, "--timeout", help="seconds --wait waits at most"),
) -> None:
    """Show the pod's container state (waiting, running, or terminated with its exit code)."""
    show_state(wait_pod_end(platform(), pod_name, timeout) if wait else platform().pod_status(pod_name), pod_name)


@app.command("stop")
def stop(
    pod_name: str | None = pod_name_option(),
    image: str | None = typer.Option(None, "--image", help="image of the replacement pod (default: the stopped pod's, "
                                     "else python:X.Y-slim); it must have a 'true' program"),
) -> None:
    """Stop the pod. The EM API has no stop route: the pod is replaced by one that exits at
    once ('true'), as a new run of a pod name replaces its pod (SIGTERM, grace, SIGKILL).
    The stop takes the pod name's lease whoever holds it: calls running there end KILLED, and
    their clients' PodFailed names you; jobs queued in a warm pod's inbox are dropped."""
    stopped = stop_pod(platform(), pod_name, "podrun pods stop", image=image)
    name = pod_name or "(default)"
    if not stopped.was_running:
        note(f"pod {name} is not running: nothing to stop")
        return
    ended = f"; jobs ended: {', '.join(stopped.jobs)}" if stopped.jobs else ""
    note(f"pod {name} stopped (replaced by a pod that exited at once){ended}")


def nodes() -> None:
    """Show the nodes of the platform and whether each is ready."""
    rows = [[node.get("name", "?"), node.get("status", "?")] for node in platform().nodes_status()]
    out().print(table("nodes", ["name", "ready"], rows))
