"""The embedded local platform: CG2's semantics on this machine, with no server and no account.

One module a concern: ``localplatform`` (the :class:`LocalPlatform` contract implementation),
``supervisor`` (the detached process that owns one pod's life), ``drivers`` (what runs a pod),
``container`` (the podman/docker pod driver and its base image), ``network`` (air-gapped pod
networks), ``telemetry`` (the onboard telemetry service on them).
"""

from .localplatform import CHUNK, DRIVERS, LocalPlatform, default_home, normalize_image

__all__ = ["CHUNK", "DRIVERS", "LocalPlatform", "default_home", "normalize_image"]
