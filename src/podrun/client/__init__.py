"""Layer 5: what the user touches — remote functions, futures, dispatch and configuration."""
