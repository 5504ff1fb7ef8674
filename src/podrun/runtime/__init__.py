"""Layer 4: what runs inside a pod. Importable without the client layers (no httpx): it needs
the wire layer, the volume-side blob store and cloudpickle/msgpack (zstandard optional)."""
