"""Go's ``path`` package for ``/`` paths: the one ``Clean`` and ``Join`` of pybuild.

Python's ``posixpath.normpath`` differs from Go's ``path.Clean`` (it keeps a leading ``//``
and turns ``""`` into ``"."`` differently), so Dockerfile paths that BuildKit cleans
(WORKDIR, .dockerignore patterns) are cleaned here.
"""

from __future__ import annotations


def clean(p: str) -> str:
    """Go's ``path.Clean``: collapses ``//``, ``.`` and ``..``; ``""`` is ``"."``."""
    if p == "":
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    out = ("/" if rooted else "") + "/".join(parts)
    return out or "."


def join(*elems: str) -> str:
    """Go's ``path.Join``: the non-empty elements joined by ``/``, then cleaned."""
    nonempty = [e for e in elems if e]
    return clean("/".join(nonempty)) if nonempty else ""


def normalize_workdir(current: str, wd: str) -> str:
    """BuildKit's ``system.NormalizeWorkdir`` on Linux: an absolute WORKDIR is kept as written
    (``/app/`` stays ``/app/``); a relative one is joined to the current one and cleaned;
    an empty one keeps the current one."""
    parent = current or "/"
    if not parent.startswith("/"):
        parent = join("/", parent)
    if not wd:
        return parent
    return wd if wd.startswith("/") else join(parent, wd)
