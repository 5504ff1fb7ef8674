"""Dockerfile builds and image tars, as CG2's air-gapped build service runs them.

Why: a Dockerfile that works here must work onboard, and one that fails onboard must fail
here. ``podman build`` (buildah) runs every instruction against the local image store with
``--network=none`` (a ``RUN pip install`` fails, as onboard) and ``--pull=never``; ``FROM``
names an image the way CG2 does (``fpga.dphi.space:5000/python:3.11-slim``, ``python:3.11-slim``,
a user's own built or loaded image) and is resolved to an image ID of the store before the
build, so no name can reach a registry. ``image_load`` reads a ``docker save`` or OCI tar's own
names and image ID first: a tar whose tags do not match the requested name is refused before
anything is loaded, and the loaded image is found by its ID, never by a tag another tenant could
race for.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .images import STOCK_PREFIX, USER_PREFIX, Image, ImageStore, normalize, user_ref, valid_name

BUILD_TIMEOUT = float(os.environ.get("PODRUN_BUILD_TIMEOUT", "1800"))
LOG_LINES = 100  # CG2 returns "the last 100 lines of the Docker Build logs"
_ARG = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass
class BuildFailed(Exception):
    """A build or load failed; ``lines`` are the log's last lines, host paths already hidden."""

    lines: list[str]


def _instructions(text: str) -> list[tuple[str, list[str]]]:
    """Each instruction's text (continuations joined) with its raw lines, comments and blank
    lines passed through as they are: only FROM lines are rewritten, every other byte stays."""
    out: list[tuple[str, list[str]]] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            out.append(("", [raw]))
            continue
        pending.append(raw)
        if not stripped.endswith("\\"):
            out.append((" ".join(line.strip().removesuffix("\\") for line in pending), pending))
            pending = []
    if pending:
        out.append((" ".join(line.strip().removesuffix("\\") for line in pending), pending))
    return out


def rewrite_from(text: str, resolve: Callable[[str], Image | None]) -> str:
    """The Dockerfile with every ``FROM`` naming an image of the store by ID. Global ``ARG``
    defaults (before the first FROM) are expanded as the builder would; a later stage may
    name an earlier one. An unknown base raises :class:`BuildFailed` in BuildKit's words."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    seen_from = False
    lines: list[str] = []
    for line, raw in _instructions(text):
        words = line.split()
        op = words[0].upper() if words else ""
        if op == "ARG" and not seen_from and len(words) > 1:
            key, _, value = words[1].partition("=")
            args[key] = value.strip("\"'")
        if op != "FROM":
            lines.extend(raw)
            continue
        seen_from = True
        rest = [w for w in words[1:] if not w.startswith("--")]
        if not rest:
            raise BuildFailed(["Dockerfile parse error: FROM requires an image name\n"])
        name = _ARG.sub(lambda m: args.get(m.group(1) or m.group(2), ""), rest[0])
        alias = rest[2].lower() if len(rest) >= 3 and rest[1].upper() == "AS" else None
        if name.lower() in stages or name == "scratch":
            base = name
        else:
            found = resolve(name) if valid_name(normalize(name)) else None
            if found is None:
                raise BuildFailed([f"ERROR: failed to solve: {name}: failed to resolve source metadata for {name}: "
                                   "not found (no registry is reachable: the base must be a stock image prepared "
                                   "here, or an image you built or loaded)\n"])
            base = found.id
        if alias:
            stages.add(alias)
        lines.append(f"FROM {base}" + (f" AS {alias}" if alias else ""))
    return "\n".join(lines) + "\n"


def _tail(text: str, hide: dict[str, str]) -> list[str]:
    lines = text.splitlines()[-LOG_LINES:]
    for real, shown in sorted(hide.items(), key=lambda item: -len(item[0])):
        lines = [line.replace(real, shown) for line in lines]
    return [line + "\n" for line in lines]


def build(store: ImageStore, *, scope: str, resolve: Callable[[str], Image | None], dockerfile: str,
          context: Path, image: str, hide: dict[str, str]) -> Image:
    """Build the Dockerfile text ``dockerfile`` with ``context`` into image ``image`` of the
    owner ``scope`` names, each FROM found by ``resolve`` (as a pod of that name would be);
    ``hide`` maps host paths to what the log shows instead (the volume as ``/clients/<volume>``)."""
    rewritten = rewrite_from(dockerfile, resolve)
    work = store.root / "tmp" / f"build-{secrets.token_hex(8)}"
    work.mkdir(parents=True)
    hide = {**hide, str(work / "Dockerfile"): "Dockerfile", str(store.root): "/var/lib/docker"}
    try:
        (work / "Dockerfile").write_text(rewritten)
        ref = user_ref(scope, image)
        old = store.inspect(ref)
        # No layer cache: intermediate images would pile up nameless in a store every user shares.
        done = store.run("build", "--pull=never", "--network=none", "--format", "docker", "--layers=false",
                         "--iidfile", str(work / "iid"), "-f", str(work / "Dockerfile"), "-t", ref, str(context),
                         timeout=BUILD_TIMEOUT)
        if done.returncode != 0:
            raise BuildFailed(_tail(done.stdout + done.stderr, hide))
        made = store.inspect((work / "iid").read_text().strip())
        if made is None:
            raise BuildFailed(["the build reported success but its image is not in the store\n"])
        if old is not None and old.id != made.id:
            store.remove(old.id)
        return made
    finally:
        for item in work.iterdir():
            item.unlink()
        work.rmdir()


# --- image tars -----------------------------------------------------------------------------

def tar_identity(source: Path | BinaryIO) -> tuple[str, list[str]]:
    """The image ID (its config's digest) and tags a ``docker save`` or OCI tar declares."""
    with tarfile.open(source) if isinstance(source, Path) else tarfile.open(fileobj=source) as archive:
        names = set(archive.getnames())

        def read(name: str) -> object:
            member = archive.extractfile(name)
            if member is None:
                raise KeyError(name)
            return json.load(member)

        if "manifest.json" in names:
            manifest = read("manifest.json")
            assert isinstance(manifest, list) and manifest
            config = str(manifest[0]["Config"])
            tags = [str(t) for item in manifest for t in item.get("RepoTags") or []]
            return config.rsplit("/", 1)[-1].removesuffix(".json"), tags
        index = read("index.json")
        assert isinstance(index, dict)
        entry = index["manifests"][0]
        annotations = entry.get("annotations") or {}
        tags = [str(annotations[k]) for k in ("io.containerd.image.name", "org.opencontainers.image.ref.name")
                if k in annotations]
        digest = str(entry["digest"]).split(":", 1)[1]
        inner = read(f"blobs/sha256/{digest}")
        assert isinstance(inner, dict)
        if "manifests" in inner:  # an index of platforms: the first one
            digest = str(inner["manifests"][0]["digest"]).split(":", 1)[1]
            inner = read(f"blobs/sha256/{digest}")
            assert isinstance(inner, dict)
        return str(inner["config"]["digest"]).split(":", 1)[1], tags


def name_matches(image: str, tags: list[str], user: str) -> bool:
    """Whether a tar's tags name ``image`` (CG2: "must match the name used during docker build");
    the user's own prefix (``<user>-<image>``) counts, as CG2's older docs asked for it."""
    wanted = normalize(image)
    return any(normalize(tag) in (wanted, f"{user}-{wanted}") for tag in tags)


def load(store: ImageStore, *, scope: str, owner: str, tar: BinaryIO, image: str, shown: str) -> Image:
    """Load ``tar`` as image ``image`` of the owner ``scope`` names (whose user name is ``owner``);
    ``shown`` is the tar's path as the log shows it."""
    try:
        image_id, tags = tar_identity(tar)
    except (tarfile.TarError, KeyError, IndexError, ValueError, TypeError, AssertionError, OSError, AttributeError):
        raise BuildFailed([f"open {shown}: not a docker save or OCI image archive (no manifest.json or index.json)\n"]) from None
    if any(normalize(tag).startswith(("podrun-stock/", "podrun-user/")) for tag in tags):
        raise BuildFailed([f"{shown}: the archive names one of podrun's own store names ({', '.join(tags)}); refused\n"])
    if not name_matches(image, tags, owner):
        raise BuildFailed([f"{shown}: the archive's tags ({', '.join(tags) or 'none'}) do not match the image name "
                           f"{image!r}: tag the image {image} before docker save\n"])
    tar.seek(0)
    done = store.run("load", timeout=BUILD_TIMEOUT, stdin=tar)  # the opened file itself, never a path again
    if done.returncode != 0:
        raise BuildFailed(_tail(done.stdout + done.stderr, {str(store.root): "/var/lib/docker"}))
    loaded = store.inspect(image_id)
    if loaded is None:
        raise BuildFailed([f"{shown}: loaded, but its image {image_id[:12]} is not in the store\n"])
    ref = user_ref(scope, image)
    old = store.inspect(ref)
    store.tag(loaded, ref)
    for tag in loaded.names:  # the tar's own names: only podrun's names are looked up
        if not tag.startswith((f"{STOCK_PREFIX}/", f"{USER_PREFIX}/")):
            store.untag(loaded, tag)
    if old is not None and old.id != loaded.id:
        store.remove(old.id)
    return store.inspect(ref) or loaded
