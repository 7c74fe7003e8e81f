"""Talking to OCI registries: transport, auth, pull, push and build-cache export."""
