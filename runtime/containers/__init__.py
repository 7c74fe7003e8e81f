"""Containers as docker users know them: the rules that turn an image config and `run` flags
into a process (config), records on disk (state), the supervisor of a detached one
(supervisor), docker's inspect document (inspect) and exec into a running one (exec)."""
