"""Where podrun keeps things inside a volume. The client (store layer) and the pod runtime
both address the volume through these names, so they live in the shared wire layer."""

from __future__ import annotations

ROOT = ".podrun"
BLOBS = f"{ROOT}/blobs"
JOBS = f"{ROOT}/jobs"

INBOX = f"{ROOT}/inbox"  # bundles waiting for a warm pod
SERVE_STATUS = f"{ROOT}/serve/status"  # what a warm pod is doing (small JSON)
STOP_NAME = "STOP"  # in the inbox: asks a warm pod to checkpoint and exit

BUNDLE_NAME = "bundle"
RESULTS_NAME = "results"
CANCEL_NAME = "cancel"


def blob_path(blob_hash: str) -> str:
    return f"{BLOBS}/{blob_hash}"


def blob_chunk_name(blob_hash: str, index: int, count: int) -> str:
    """Part ``index`` (1-based) of ``count`` of a blob too large for one uplink call."""
    return f"{blob_hash}.{index}of{count}"


def job_dir(job_id: str) -> str:
    return f"{JOBS}/{job_id}"


def job_file(job_id: str, name: str) -> str:
    return f"{JOBS}/{job_id}/{name}"


def segment_name(index: int) -> str:
    """Result segment ``index`` of a job (``runtime/results.py``): immutable once it exists."""
    return f"{RESULTS_NAME}.{index}"

# Versioned objects: one folder per key, one sub-folder per generation (a full base and the
# versions built on it), one immutable file per version. See store/objects.py.
OBJECTS = f"{ROOT}/objects"


def object_dir(pod_name: str, namespace: str, object_id: str | None = None) -> str:
    """The folder of one object (or of a whole namespace when ``object_id`` is None)."""
    return f"{OBJECTS}/{pod_name}/{namespace}" + (f"/{object_id}" if object_id else "")
