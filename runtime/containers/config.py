"""Docker's rules for turning an image config and `docker run`'s flags into a process: argv,
environment, hostname, working directory and user. Pure functions (the caller passes in what
they read: the calling process's environment, the host's name), shared by the foreground
`pybuild run` and the coming `run -d` and `create`.

Sources: docker/cli opts (ValidateEnv, ParseEnvFile, --entrypoint) and moby's daemon (runconfig
merge, mergeAndVerifyConfig, newContainer's hostname, CreateDaemonEnvironment with
ReplaceOrAppendEnvValues, SetupWorkingDirectory).
"""
from __future__ import annotations

from _collections_abc import Mapping, Sequence  # collections.abc's own source, loaded by os

from cache.fspath import clean_abs
from runtime.errors import ConfigError
from runtime.spec import DEFAULT_PATH

_SPACE = " \t\r\n\v\f"


def argv(image: Mapping, entrypoint: str | None, command: Sequence[str]) -> list[str]:
    """The command line. `--entrypoint X` replaces the image's Entrypoint and drops its Cmd
    (`--entrypoint ''` clears both); COMMAND args replace Cmd and keep Entrypoint. Raises
    ConfigError when nothing is left to run ("no command specified")."""
    if entrypoint is not None:
        out = ([entrypoint] if entrypoint else []) + list(command)
    else:
        out = list(image.get("Entrypoint") or []) + list(command or image.get("Cmd") or [])
    if not out:
        raise ConfigError("no command specified")
    return out


def hostname(requested: str | None, container_id: str, network: str | None, host_name: str) -> str:
    """--hostname, else on the host network the host's own name, else the container ID's
    first 12 hex digits (also for pybuild's default network, docker's default being bridge)."""
    if requested:
        return requested
    if network == "host":
        return host_name
    return container_id[:12]


def user_env(items: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """docker run -e: `K=V` as given; a bare `K` takes its value from environ, and when environ
    has none stays bare, which removes K from the image's environment (see `environment`)."""
    out = []
    for item in items:
        k, eq, _ = item.partition("=")
        if not k:
            raise ConfigError(f"invalid environment variable: {item}")
        out.append(item if eq or k not in environ else f"{k}={environ[k]}")
    return out


def env_file(text: str, environ: Mapping[str, str], name: str = "env file") -> list[str]:
    """The `K=V` lines of an --env-file: blank lines and `#` comments skipped, leading space
    trimmed, values passed through untrimmed; a bare `K` takes environ's value or is dropped."""
    out = []
    for n, raw in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        k, eq, v = line.partition("=")
        if not k:
            raise ConfigError(f"{name}: no variable name on line {n}: {raw!r}")
        if any(c in k for c in _SPACE):
            raise ConfigError(f"{name}: variable {k!r} contains whitespaces (line {n})")
        if eq:
            out.append(f"{k}={v}")
        elif k in environ:
            out.append(f"{k}={environ[k]}")
    return out


def _key(entry: str) -> str:
    return entry.partition("=")[0]


def environment(image_env: Sequence[str], user_env: Sequence[str], hostname: str,
                tty: bool) -> list[str]:
    """The container's environment as docker builds it: the user's entries, then the image's
    whose name the user did not give (runconfig merge); laid over PATH (docker's default),
    HOSTNAME and, with a tty, TERM=xterm, an entry of the same name replacing a default in its
    place. A bare name removes that variable."""
    given = {_key(e) for e in user_env}
    merged = list(user_env) + [e for e in image_env if _key(e) not in given]
    out: list[str | None] = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}"]
    if tty:
        out.append("TERM=xterm")
    place = {_key(e): i for i, e in enumerate(out)}
    for e in merged:
        k, eq, _ = e.partition("=")
        if k in place:
            out[place[k]] = e if eq else None
        elif eq:
            out.append(e)
    return [e for e in out if e is not None]


def workdir(requested: str | None, image: Mapping) -> str:
    """-w, else the image's WorkingDir, else /; it must be absolute, and is cleaned."""
    wd = requested or image.get("WorkingDir") or "/"
    if not wd.startswith("/"):
        raise ConfigError(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
    return clean_abs(wd)


def user(requested: str | None, image: Mapping) -> str:
    """-u, else (also for `-u ''`) the image's User; empty means root."""
    return requested or image.get("User") or ""
