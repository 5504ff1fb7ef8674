"""The embedded local platform: CG2's semantics on this machine, with no server and no account.

One module a concern: ``localplatform`` (the :class:`LocalPlatform` contract implementation),
``pods`` (run, replace, stop and status of pods), ``supervisor`` (the detached process that owns
one pod's life), ``drivers`` (what runs a pod), ``container`` (the podman pod driver),
``network`` (air-gapped pod networks), ``telemetry`` (the onboard telemetry service on them).
"""

from .localplatform import CHUNK, DRIVERS, LocalPlatform, default_home, normalize_image

__all__ = ["CHUNK", "DRIVERS", "LocalPlatform", "default_home", "normalize_image"]
