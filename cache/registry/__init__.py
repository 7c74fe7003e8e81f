"""Talking to OCI registries: transport, auth, registries.conf, the client, OCI layout dirs."""
