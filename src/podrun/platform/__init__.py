"""Layer 2: the pod platform contract (``Platform``) and its implementations. Nothing above
this layer knows HTTP."""
