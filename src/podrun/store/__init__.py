"""Layer 3: what lives in a volume — the content-addressed blob store and, on the client, the
manifest of what each volume already holds."""
