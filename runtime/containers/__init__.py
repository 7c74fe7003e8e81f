"""Containers as docker users know them. Today: the rules that turn an image config and
`run` flags into a process (config.py); state, supervisor and lifecycle come next."""
