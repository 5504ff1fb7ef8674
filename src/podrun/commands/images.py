"""``podrun images ls|prepare|build|push|load``: the local image store's stock images, and the
runtime image through ``client/images.py``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..client import images
from ..platform.local import stock
from ..platform.local.images import ARCHES, ImageStore, host_arch, pod_arch
from ._common import err, human_size, note, out, platform, pod_name_option, table, transfer

app = typer.Typer(help="Your images on the platform: list, prepare (local stock images), build, push, load.",
                  no_args_is_help=True)


@app.command("ls")
def ls() -> None:
    """List the images you built or loaded (stock images are not listed)."""
    found = platform().image_list()
    columns = list(dict.fromkeys(key for item in found for key in item)) or ["Repository", "Tag", "ID", "CreatedAt", "Size"]
    out().print(table("images", columns, [[item.get(c, "") for c in columns] for item in found]))
    note(f"{len(found)} images")


_PREPARE_NAMES_HELP = (f"stock images to make (default: {', '.join(stock.DEFAULT_SET)}); "
                       f"preparable: {', '.join(sorted(stock.PREPARABLE))}")


@app.command("prepare")
def prepare(
    names: list[str] = typer.Argument(None, help=_PREPARE_NAMES_HELP),
    arch: str = typer.Option("host", "--arch", help="arm64 (CG2's, runs under qemu) or host (this machine's, fast)"),
    force: bool = typer.Option(False, "--force", help="bootstrap again even when the image or its cached tar is there"),
    list_only: bool = typer.Option(False, "--list", help="list what can be prepared and what is prepared here"),
) -> None:
    """Make CG2's stock images offline from Debian's packages (mmdebstrap) in the local image
    store ($PODRUN_IMAGE_STORE, default $PODRUN_HOME/images): minutes per image under qemu,
    seconds when its bootstrap is cached."""
    store, chosen = ImageStore(), pod_arch(arch)
    if list_only:
        here = {a: set(store.stock(a)) for a in ARCHES}
        rows = [[r.name, ", ".join(r.aliases), ", ".join(a for a in ARCHES if r.name in here[a]), r.note]
                for r in stock.RECIPES.values()]
        out().print(table("preparable stock images", ["image", "also", "prepared", "what"], rows))
        return
    console = err()
    for name in names or list(stock.DEFAULT_SET):
        with console.status(f"{name} ({chosen})") as status:
            def show(line: str, label: str = f"{name} ({chosen})") -> None:
                status.update(f"{label}: {line}")

            done = stock.prepare(store, name, chosen, force=force, progress=show)
        size = f", {human_size(done.size)}" if done.size else ""
        note(f"{done.image} ({chosen}): {done.done} in {done.seconds} s{size}")
    if chosen != host_arch():
        note(f"pods run {chosen} images when PODRUN_LOCAL_ARCH={chosen} (default: the host's, {host_arch()})")


@app.command("build")
def build(
    tag: str = typer.Argument(..., help="the image's name, e.g. podrun-runtime"),
    onboard: bool = typer.Option(False, "--onboard", help="build on the platform from an onboard base (uplinks tens of KB)"),
    tar: Path | None = typer.Option(None, "--tar", help="ground build: the tar to write (default: <tag>.tar)"),
    base: str | None = typer.Option(
        None, "--base", help=f"base image (default: {images.DEFAULT_BASE}; onboard: {images.ONBOARD_BASE})"
    ),
    wheel: list[Path] = typer.Option([], "--wheel", help="a linux/arm64 wheel to install in the image; repeatable"),
    engine: str | None = typer.Option(None, "--engine", help="docker or podman (default: the one that works)"),
    arch: str = typer.Option("arm64", "--arch", help="podman: the base's architecture, arm64 (CG2's) or host"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Build the podrun runtime image: here for linux/arm64 into a tar (then 'images push'),
    or --onboard on the platform itself. With podman the build is offline, in the local image
    store, from a prepared stock base ('podrun images prepare')."""
    if onboard:
        images.build_onboard(tag, base=base or images.ONBOARD_BASE, platform=platform(), pod_name=pod_name, wheels=wheel)
        note(f"built {tag} onboard from {base or images.ONBOARD_BASE}")
        return
    written = images.build(tag, tar or Path(f"{tag.replace('/', '_').replace(':', '_')}.tar"), base=base or images.DEFAULT_BASE,
                           wheels=wheel, engine=engine, arch=arch)
    note(f"built {tag} into {written} ({human_size(written.stat().st_size)}); next: podrun images push {written} {tag}")


@app.command("push")
def push(
    tar: Path = typer.Argument(..., exists=True, dir_okay=False, help="an image tar (docker save / 'images build' output)"),
    image: str = typer.Argument(..., help="the name to load it as"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Uplink an image tar and load it on the platform (one uplink, one load)."""
    size = tar.stat().st_size
    with transfer(f"uplink {tar.name}", size) as progress:
        images.push(tar, image, platform=platform(), pod_name=pod_name, progress=progress)
    note(f"pushed {tar} ({human_size(size)}) as {image}")


@app.command("load")
def load(
    tarfile: str = typer.Argument(..., help="path of an image tar already in the volume"),
    image: str = typer.Argument(..., help="the name to load it as"),
    pod_name: str | None = pod_name_option(),
) -> None:
    """Load an image tar that is already in the volume (e.g. put there by 'files put')."""
    platform().image_load(tarfile, image, pod_name=pod_name)
    note(f"loaded {tarfile} as {image}")
