"""Layer 1: bytes. Pure functions shared by the client and the pod runtime (no I/O beyond
reading and writing files handed in). Runs on Python 3.10-3.12 with cloudpickle, msgpack and,
where present, zstandard."""
