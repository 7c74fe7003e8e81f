"""One executor per instruction: its effect on the image config and, for RUN, COPY, ADD and
WORKDIR, on the filesystem (a new layer).

`dispatch` maps each instruction to its executor (what `builder.solve` calls); `config` holds
the config-only instructions; `run`, `copy` and `workdir` the filesystem steps, which share
`layer` (a scratch upper dir, committed as the layer). This package module imports nothing,
so no submodule depends on it.
"""
