"""`pybuild commit`: a new image from a container's changes, as `docker commit` makes it.

The container's upper dir (overlay format already: whiteouts and opaque dirs are what a layer
dir at rest holds) goes into the store through the one layer commit path (`store.commit_layer`,
`keep_source`: copied in through the store's own tar writer, so the container keeps its changes;
mtimes kept, as docker does), on top of the container's image's layers. The config is the
image's with the container's run config laid over it (Cmd, Entrypoint, Env, WorkingDir, User),
then docker's `--change` lines (Dockerfile instructions through grammar.parse and the builder's
config executors), one history entry (`created_by` the container's command, author, comment).
A running container is frozen with its freezer cgroup while its upper dir is read (docker's
default `--pause`); without a freeze (`--pause=false`, no freezer cgroup) a running one is
refused, a stopped one is kept from starting meanwhile (see `paused`). Lives in builder/: it
writes an image, and reads runtime's container records.
"""
from __future__ import annotations

import contextlib
import os
import signal

from builder import imageconfig as ic
from builder.errors import BuildError
from cache import image as im

# docker commit --change accepts these (moby's validCommitCommands)
CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
           "WORKDIR", "STOPSIGNAL")


class _Changes:
    """What builder.steps.config's executors ask of a build stage, for `--change` lines: the
    config to edit, expansion in the config's env, no history (docker adds none per change)."""

    def __init__(self, config: dict):
        from grammar.lexer import ShellLex

        class State:
            pass
        self.state = State()
        self.state.config = config
        self.cmd_set = False
        self.lex = ShellLex("\\")
        self.df = type("Df", (), {"escape": "\\", "filename": "--change"})()

    def expansion_env(self) -> dict:
        return ic.env_dict(self.state.config)

    def expand(self, ins, word: str) -> str:
        return self.lex.process_word(word, self.expansion_env())

    def expand_words(self, ins, word: str) -> list[str]:
        return self.lex.process_words(word, self.expansion_env())

    def error(self, ins, msg: str) -> BuildError:
        return BuildError(f"--change: {msg}")

    def config_step(self, ins, text: str) -> None:
        pass


def apply_changes(config: dict, changes: list[str]) -> None:
    """docker commit --change: each a Dockerfile instruction of CHANGES, applied in order."""
    import grammar
    from builder.steps import config as steps
    from grammar import ast, gopath
    from grammar.errors import DockerfileError

    handlers = {ast.Cmd: steps.cmd, ast.Entrypoint: steps.entrypoint, ast.Env: steps.env,
                ast.Expose: steps.expose, ast.Label: steps.label, ast.Onbuild: steps.onbuild,
                ast.User: steps.user, ast.Volume: steps.volume, ast.StopSignal: steps.stopsignal}
    run = _Changes(config)
    for text in changes:
        word = text.strip().split(None, 1)[0].upper() if text.strip() else ""
        if word not in CHANGES:
            raise BuildError(f"{word or text!r} is not a valid change command")
        try:
            df = grammar.parse("FROM scratch\n" + text, filename="--change")
            grammar.validate(df)        # the checks a build makes, on a stage of its own
        except DockerfileError as e:
            raise BuildError(f"--change {text!r}: {e.message}") from None
        for ins in df.instructions[1:]:
            if not isinstance(ins, (ast.Workdir, *handlers)):     # a second line's RUN, say
                raise BuildError(f"{ins.keyword.upper()!r} is not a valid change command")
            if isinstance(ins, ast.Workdir):
                cfg = config["config"]
                cfg["WorkingDir"] = gopath.normalize_workdir(cfg.get("WorkingDir") or "/",
                                                             run.expand(ins, ins.path))
            else:
                handlers[type(ins)](run, ins, 1)


def container_config(image_config: dict, run_config: dict) -> dict:
    """The image's config with what the container ran laid over it (docker keeps the
    container's Config: its Cmd, Entrypoint, Env, WorkingDir, User)."""
    cfg = ic.inherit(image_config)
    c = cfg["config"]
    hostname = f"HOSTNAME={run_config.get('Hostname', '')}"
    c["Env"] = [e for e in run_config.get("Env") or [] if e != hostname] or c.get("Env")
    c["Cmd"] = run_config.get("Cmd")
    c["Entrypoint"] = run_config.get("Entrypoint")
    c["WorkingDir"] = run_config.get("WorkingDir") or c.get("WorkingDir", "")
    c["User"] = run_config.get("User", c.get("User", ""))
    for k in ("Entrypoint", "Cmd"):
        if not c[k]:
            c.pop(k)
    c.pop("ArgsEscaped", None)
    return cfg


@contextlib.contextmanager
def paused(c, pause: bool, doing: str = "committed"):
    """The container held still while the body reads its upper dir: a stopped one kept from
    starting (its supervisor.lock held, as `cp` does), a running one frozen (its freezer cgroup,
    docker's `--pause`). A running one is never read as it runs (`--pause=false`, or no freezer
    cgroup of its own): the walk goes by path, so a directory it swaps for a link to / between
    hashing and copying would pull host files into the image. SIGTERM/SIGHUP while frozen raise
    KeyboardInterrupt, so the container is thawed on the way out; after a SIGKILL, the next
    command that reads the container thaws it (runtime.containers.state's FROZEN_BY)."""
    import fcntl
    import time

    from runtime import cgroups
    from runtime.containers import inspect

    lock = os.open(os.path.join(c.path, "supervisor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                   0o600)
    try:
        # a container starting or just ended (its supervisor still recording the exit) has
        # neither a free lock nor a pid 1: wait a moment for one of them
        end = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stopped = True
            except BlockingIOError:
                stopped = False
            pid = 0 if stopped else inspect.init_pid(c.reload())
            if stopped or pid or time.monotonic() > end:
                break
            time.sleep(0.02)
        if stopped:
            yield           # no supervisor: stopped, and it stays so while we hold the lock
            return
        path = None
        if pid and pause:
            try:
                ver, dirs = cgroups.of_pid(pid)
                path = dirs.get("freezer")
            except OSError:
                path = None
        if not path or os.path.basename(os.path.dirname(path)) != cgroups.PARENT:
            why = ("it is starting or stopping" if not pid else "--pause=false" if not pause
                   else "it has no freezer cgroup of its own")
            raise BuildError(f"container {c.name} is running and cannot be {doing} as it runs "
                             f"({why}): its changes could swap a dir for a link to / mid-read; "
                             "stop it first" + (", or commit with the default --pause"
                                                if doing == "committed" else ""))
        if cgroups.frozen(ver, path):
            yield           # `pause`d: it stays so (docker's commit of a paused container)
            return
        with _interruptible():
            marker = c.freezing(ver, path)  # a kill -9 from here on: the next reader thaws it
            try:
                cgroups.freeze(ver, path, True)
                yield
            finally:        # a second signal must not cut the thaw short: held till after
                held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS + (signal.SIGINT,))
                try:
                    cgroups.freeze(ver, path, False)
                    c.thawed(marker)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        os.close(lock)


_STOPS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _interruptible():
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the body (as SIGINT does), so its
    finally runs; the old handlers come back after."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_n, _f):
        raise KeyboardInterrupt
    old = {sig: signal.signal(sig, stop) for sig in _STOPS}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def commit(store, c, *, author: str = "", message: str = "", changes=(), pause: bool = True,
           tag: str | None = None) -> str:
    """Make the image; returns its ID (sha256:...)."""
    from cache import refs
    from cache.errors import StoreError
    from runtime.containers import inspect

    if tag:
        refs.normalize(tag)             # a bad name fails before any work
    try:
        base = store.image(c.config["image_id"])
    except StoreError:
        raise BuildError(f"the image of container {c.name} ({c.config.get('image')}) is gone") from None
    run_config = inspect.doc(c)["Config"]
    cfg = container_config(base.config, run_config)
    apply_changes(cfg, list(changes))
    upper = os.path.join(c.path, "upper")
    with paused(c, pause):
        diff_id = store.commit_layer(upper, epoch=None, keep_empty=True, keep_source=True)
    created = im.rfc3339(None)
    cfg = im.add_step(cfg, " ".join(run_config.get("Cmd") or []), diff_id=diff_id,
                      created=created, comment=message)   # moby: strings.Join(Config.Cmd, " ")
    if not message:
        cfg["history"][-1].pop("comment", None)
    if author:
        cfg["author"] = author
        cfg["history"][-1]["author"] = author
    cfg["created"] = created
    return store.put_image(cfg, [tag] if tag else ())
