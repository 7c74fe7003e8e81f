"""What every filesystem step shares: a scratch upper/work pair and committing it as the layer.

RUN, COPY/ADD and WORKDIR each write into a fresh overlay upper dir from the store's scratch
space; the upper dir then becomes the step's layer (`store.commit_layer`).
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path


@contextlib.contextmanager
def scratch(store):
    """A fresh upper+work pair in the store's scratch space, removed afterwards."""
    tmp = Path(store.new_scratch())
    (tmp / "upper").mkdir()
    (tmp / "upper").chmod(0o755)    # the RUN's /: 0755 whatever the caller's umask (077: a
    (tmp / "work").mkdir()          # USER other than root could not even exec /bin/sh)
    try:
        yield tmp / "upper", tmp / "work"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(run, upper: Path, keep_base=None):
    """The upper dir becomes the step's layer; like BuildKit, a step that changed nothing
    still gets one (the empty tar, sha256:5f70bf18...). `keep_base`: builder.delta's."""
    return run.solver.store.commit_layer(upper, epoch=run.solver.opts.epoch, keep_empty=True,
                                         keep_base=keep_base)
