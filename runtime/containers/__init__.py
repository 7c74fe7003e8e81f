"""Containers as docker users know them; today the rules that turn an image config and `run` flags into a process (config.py)."""
