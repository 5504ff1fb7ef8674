"""Import the user's shipped modules straight from the volume's blob store.

The client ships each module of the user's project as one content-addressed source blob
(``header.options["modules"]``: ``[name, blob hash, is_package]``), so an edit to one file
re-sends that file alone. This finder sits first on ``sys.meta_path``: the user's own version
of a module wins over a same-named one in the image, as it does on the client.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ..store.volume_blobs import VolumeBlobs


class ShippedModules:
    """Finder and loader for modules whose sources are blobs in the volume. It implements the
    finder and InspectLoader protocols itself: ``importlib.abc`` would import
    ``importlib.resources`` and ``tempfile`` into every pod, shipped modules or not."""

    def __init__(self, blobs: VolumeBlobs, table: Sequence[Sequence[Any]]) -> None:
        self.blobs = blobs
        self.table: dict[str, tuple[str, bool]] = {str(n): (str(h), bool(p)) for n, h, p in table}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        entry = self.table.get(fullname)
        if entry is None:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self,  # type: ignore[arg-type]  # a Loader by protocol
                                           origin=self._origin(fullname), is_package=entry[1])
        spec.has_location = True  # modules may use __file__ (e.g. to find their folder), as they do at home
        return spec

    def _origin(self, fullname: str) -> str:
        """A path where the module would live in the volume: what ``__file__`` and tracebacks show
        (the source itself is served by this loader from its blob)."""
        tail = "/__init__.py" if self.table[fullname][1] else ".py"
        return str(self.blobs.directory.parent / "modules" / fullname.replace(".", "/")) + tail

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def get_source(self, fullname: str) -> str:
        blob_hash, _is_package = self.table[fullname]
        return self.blobs.read(blob_hash).decode("utf-8")

    def is_package(self, fullname: str) -> bool:
        return self.table[fullname][1]

    def get_code(self, fullname: str) -> Any:
        return compile(self.get_source(fullname), self._origin(fullname), "exec", dont_inherit=True)

    def exec_module(self, module: ModuleType) -> None:
        if self.table[module.__name__][1]:
            module.__path__ = []  # a package: its submodules come from this finder too
        try:
            exec(self.get_code(module.__name__), module.__dict__)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("podrun."):
                raise
            raise ModuleNotFoundError(
                f"{exc} (imported by the shipped module {module.__name__}): a pod has podrun's pod package only, "
                "not its client or platform code; there use the public names of 'import podrun', or import "
                f"{exc.name} inside the code that runs on the client", name=exc.name) from exc


def install(blobs: VolumeBlobs, table: Sequence[Sequence[Any]] | None) -> ShippedModules | None:
    """Put the job's shipped modules first on ``sys.meta_path`` (nothing when none were shipped)."""
    if not table:
        return None
    finder = ShippedModules(blobs, table)
    sys.meta_path.insert(0, finder)
    return finder
