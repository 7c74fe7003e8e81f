"""runtime.containers.config: docker's rules from image config + `docker run` flags to a process."""
from __future__ import annotations

import pytest

from runtime.containers import config
from runtime.errors import ConfigError
from runtime.spec import DEFAULT_PATH

IMAGE = {"Entrypoint": ["/entry", "-x"], "Cmd": ["serve", "--port=80"], "Env": ["PATH=/img/bin", "A=img"],
         "WorkingDir": "/srv", "User": "app"}


@pytest.mark.parametrize("entrypoint, command, expect", [
    (None, [], ["/entry", "-x", "serve", "--port=80"]),        # Entrypoint + Cmd
    (None, ["sh"], ["/entry", "-x", "sh"]),                     # CMD args replace Cmd only
    ("/bin/echo", [], ["/bin/echo"]),                           # --entrypoint drops Cmd
    ("/bin/echo", ["hi"], ["/bin/echo", "hi"]),
    ("", ["sh", "-c", "true"], ["sh", "-c", "true"]),           # --entrypoint '' clears it
    ("echo two words", [], ["echo two words"]),                 # one argv element, as docker
])
def test_argv(entrypoint, command, expect):
    assert config.argv(IMAGE, entrypoint, command) == expect


def test_argv_without_anything_to_run_is_docker_s_error():
    with pytest.raises(ConfigError, match="^no command specified$"):
        config.argv(IMAGE, "", [])
    with pytest.raises(ConfigError, match="^no command specified$"):
        config.argv({}, None, [])
    assert config.argv({"Cmd": ["sh"]}, None, []) == ["sh"]
    assert config.argv({"Entrypoint": None, "Cmd": None}, None, ["true"]) == ["true"]


def test_environment_order_and_overrides():
    env = config.environment(["PATH=/img/bin", "A=img", "B=img"], ["B=user", "C=user"], "h1", False)
    # defaults in place (PATH replaced by the image's), then the user's, then the image's rest
    assert env == ["PATH=/img/bin", "HOSTNAME=h1", "B=user", "C=user", "A=img"]


def test_environment_defaults_tty_and_removal():
    assert config.environment([], [], "h", True) == [f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "TERM=xterm"]
    # an image or user HOSTNAME/TERM replaces the default in its place
    assert config.environment(["TERM=dumb"], ["HOSTNAME=mine"], "h", True) == [
        f"PATH={DEFAULT_PATH}", "HOSTNAME=mine", "TERM=dumb"]
    # a bare name (-e K with K unset here) removes K, from the image's env and the defaults
    assert config.environment(["A=img", "B=img"], ["A", "TERM"], "h", True) == [
        f"PATH={DEFAULT_PATH}", "HOSTNAME=h", "B=img"]


def test_user_env_takes_bare_names_from_the_callers_environment():
    got = config.user_env(["A=1", "B", "C", "D="], {"B": "from-here"})
    assert got == ["A=1", "B=from-here", "C", "D="]
    with pytest.raises(ConfigError, match="invalid environment variable: =x"):
        config.user_env(["=x"], {})


def test_env_file_lines():
    text = "\ufeff# comment\n\n  A=1  \nB= spaced value \nC\nD\n"
    assert config.env_file(text, {"C": "here"}) == ["A=1  ", "B= spaced value ", "C=here"]
    with pytest.raises(ConfigError, match="contains whitespaces"):
        config.env_file("A B=1\n", {})
    with pytest.raises(ConfigError, match="no variable name"):
        config.env_file("=1\n", {})


def test_workdir_and_user():
    assert config.workdir(None, {}) == "/"
    assert config.workdir(None, IMAGE) == "/srv"
    assert config.workdir("", IMAGE) == "/srv"
    assert config.workdir("/a/../b/", IMAGE) == "/b"
    assert config.workdir("//x", {}) == "/x"
    with pytest.raises(ConfigError, match="the working directory 'rel' is invalid, it needs to be an "
                                          "absolute path"):
        config.workdir("rel", {})
    assert config.user(None, IMAGE) == "app"
    assert config.user("", IMAGE) == "app"          # docker: an empty -u keeps the image's
    assert config.user("0:0", IMAGE) == "0:0"
    assert config.user(None, {}) == ""


def test_hostname():
    cid = "0123456789abcdef" * 4
    assert config.hostname("box", cid, "host", "myhost") == "box"
    assert config.hostname(None, cid, None, "myhost") == "0123456789ab"
    assert config.hostname(None, cid, "none", "myhost") == "0123456789ab"
    assert config.hostname(None, cid, "host", "myhost") == "myhost"   # --network host: the host's
