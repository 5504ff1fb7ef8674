"""Objects as a client reaches them: through the configured platform's volume, with the
on-disk cache under ``$PODRUN_HOME/object-cache``. The API itself is pod-side
(``store/object_api.py``, which a pod uses on its own volume); importing this module plugs the
client's volumes into it, and ``podrun.get_object`` & co. resolve here on a client."""

from __future__ import annotations

from ..store import object_api
from ..store.object_api import (
    compact_object,
    delete_objects,
    download_object,
    get_object,
    latest,
    patch_object,
    put_object,
    register_blobs,
    update_object,
    upload_object,
)
from ..store.objects import VolumeFiles
from ..store.refs import ObjectKey
from .config import current_platform, home
from .object_cache import ObjectCache
from .platform_volume import PlatformVolume

__all__ = ["compact_object", "delete_objects", "download_object", "get_object", "latest", "patch_object", "put_object",
           "register_blobs", "update_object", "upload_object"]


def _client_volumes(key: ObjectKey) -> tuple[VolumeFiles, ObjectCache, str]:
    platform = current_platform()
    return PlatformVolume(platform, key.volume_pod_name), ObjectCache(home() / "object-cache"), platform.identity()


object_api.use_client_volumes(_client_volumes)
