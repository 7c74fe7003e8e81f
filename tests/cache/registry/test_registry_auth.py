"""Auth: WWW-Authenticate parsing, the credential lookup order of podman/docker (files and a
real credential helper program), Basic and token auth against real registries, identity tokens,
token refresh, and login/logout writing docker's config.json."""
from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import time

import pytest
from registry_fixture import run_registry

from cache.keys import digest_bytes
from cache.registry import auth
from cache.registry.auth import Challenge, credentials, parse_challenges
from cache.registry.client import Repository
from cache.registry.config import Endpoint
from cache.registry.errors import RegistryError, Unauthorized


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"',
     [Challenge("bearer", {"realm": "https://auth.docker.io/token", "service": "registry.docker.io"})]),
    ('Bearer realm="https://r/token", scope="repository:a/b:pull,push", error="insufficient_scope"',
     [Challenge("bearer", {"realm": "https://r/token", "scope": "repository:a/b:pull,push",
                           "error": "insufficient_scope"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('basic realm=simple, Bearer realm="x,y", service=s',
     [Challenge("basic", {"realm": "simple"}), Challenge("bearer", {"realm": "x,y", "service": "s"})]),
    ('Bearer realm="say \\"hi\\""', [Challenge("bearer", {"realm": 'say "hi"'})]),
    ("Negotiate abc123==", [Challenge("negotiate", {"": "abc123=="})]),
    ("", []),
])
def test_challenge_parsing(header, expected):
    assert parse_challenges(header) == expected


def b64(user, pw):
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def docker_config(home):
    return home / ".docker" / "config.json"


def test_lookup_order(isolated_home, tmp_path, monkeypatch):
    home = isolated_home
    assert credentials("r.example") is None
    write_json(docker_config(home), {"auths": {"https://r.example/v1/": {"auth": b64("docker", "d")},
                                               "https://index.docker.io/v1/": {"auth": b64("hub", "h")}}})
    assert credentials("r.example") == ("docker", "d")        # docker keys by host, scheme and path dropped
    assert credentials("docker.io") == ("hub", "h")
    assert credentials("registry-1.docker.io") == ("hub", "h")
    write_json(home / ".config/containers/auth.json", {"auths": {"r.example": {"auth": b64("cfg", "c")}}})
    assert credentials("r.example") == ("cfg", "c")
    runtime = write_json(tmp_path / "run/containers/auth.json", {"auths": {
        "r.example": {"auth": b64("run", "r")}, "r.example/team": {"auth": b64("team", "t")}}})
    assert credentials("r.example") == ("run", "r")
    assert credentials("r.example", "team/app") == ("team", "t")   # most specific key first
    assert credentials("r.example", "other/app") == ("run", "r")
    # $REGISTRY_AUTH_FILE takes the runtime file's place (podman), the others still follow
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(write_json(tmp_path / "authfile.json", {"auths": {}})))
    assert credentials("r.example") == ("cfg", "c")
    write_json(tmp_path / "authfile.json", {"auths": {"r.example": {"auth": b64("env", "e")}}})
    assert credentials("r.example") == ("env", "e")
    assert runtime.exists()


def test_identity_token_and_bad_entries(isolated_home):
    cfg = write_json(docker_config(isolated_home), {"auths": {
        "a.example": {"auth": b64("u", "p"), "identitytoken": "tok"}, "b.example": {"auth": "!!!"}}})
    assert credentials("a.example") == ("<token>", "tok")
    with pytest.raises(RegistryError, match=f"{cfg}: invalid base64"):
        credentials("b.example")
    cfg.write_text("{not json")
    with pytest.raises(RegistryError, match="invalid JSON"):
        credentials("a.example")


HELPER = """#!{python}
import json, os, sys
store = os.environ["PBTEST_STORE"]
data = json.load(open(store)) if os.path.exists(store) else {{}}
action, arg = sys.argv[1], sys.stdin.read().strip()
if action == "get":
    if arg not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": arg, "Username": data[arg][0], "Secret": data[arg][1]}}))
elif action == "store":
    d = json.loads(arg); data[d["ServerURL"]] = [d["Username"], d["Secret"]]
elif action == "erase":
    if arg not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    del data[arg]
json.dump(data, open(store, "w"))
"""


@pytest.fixture
def helper(tmp_path, monkeypatch):
    """A docker-credential-pbtest program on $PATH keeping credentials in a JSON file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "docker-credential-pbtest"
    exe.write_text(HELPER.format(python=sys.executable))
    exe.chmod(0o755)
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("PBTEST_STORE", str(store))
    return store


def test_credential_helpers(isolated_home, helper):
    helper.write_text(json.dumps({"h.example": ["helper-user", "hs"],
                                  "https://index.docker.io/v1/": ["hub-helper", "x"],
                                  "s.example": ["store-user", "ss"]}))
    write_json(docker_config(isolated_home), {
        "credHelpers": {"h.example": "pbtest", "docker.io": "pbtest", "m.example": "missing"},
        "auths": {"h.example": {"auth": b64("file", "f")}, "s.example": {"auth": b64("file", "f")},
                  "plain.example": {"auth": b64("plain", "p")}},
        "credsStore": "pbtest"})
    assert credentials("h.example") == ("helper-user", "hs")      # credHelpers beats auths
    assert credentials("docker.io") == ("hub-helper", "x")        # asked with docker's key
    assert credentials("s.example") == ("file", "f")              # auths beats credsStore
    assert credentials("plain.example") == ("plain", "p")
    assert credentials("nothing.example") is None                 # credsStore: not found
    with pytest.raises(RegistryError, match="docker-credential-missing .* is not in \\$PATH"):
        credentials("m.example")


# ---- against real registries --------------------------------------------------------------

def login_file(home, reg, user=None, password=None):
    write_json(docker_config(home), {"auths": {reg.host: {"auth": b64(user or reg.user,
                                                                     password or reg.password)}}})


def push_and_fetch(reg, path, tmp_path) -> str:
    data = os.urandom(3000)
    p = tmp_path / "blob"
    p.write_bytes(data)
    d = digest_bytes(data)
    r = Repository(Endpoint(reg.host, path), push=True)
    r.push_blob(d, len(data), p)
    out = io.BytesIO()
    Repository(Endpoint(reg.host, path)).fetch_blob(d, out)
    assert out.getvalue() == data
    return d


def test_basic_auth(auth_registry, isolated_home, tmp_path):
    hint = f"\\(run `pybuild login {auth_registry.host}`\\)$"
    with pytest.raises(Unauthorized, match="unauthorized: .*" + hint):
        Repository(Endpoint(auth_registry.host, "basic/x")).get_manifest("latest")
    login_file(isolated_home, auth_registry)
    push_and_fetch(auth_registry, "basic/ok", tmp_path)
    login_file(isolated_home, auth_registry, password="wrong")
    with pytest.raises(Unauthorized) as e:
        Repository(Endpoint(auth_registry.host, "basic/ok")).get_manifest("latest")
    assert str(e.value) == (f"{auth_registry.host}/basic/ok: unauthorized: incorrect username or password "
                            f"(run `pybuild login {auth_registry.host}`)")


def test_token_auth(token_registry, isolated_home, tmp_path):
    tokens = token_registry.tokens
    with pytest.raises(Unauthorized, match="\\(run `pybuild login"):
        Repository(Endpoint(token_registry.host, "tok/x"), push=True).push_blob(
            digest_bytes(b"x"), 1, write_json(tmp_path / "x", 1))
    login_file(isolated_home, token_registry)
    n = len(tokens.requests)
    push_and_fetch(token_registry, "tok/ok", tmp_path)
    asked = tokens.requests[n:]
    assert ("GET", token_registry.user, ["repository:tok/ok:pull,push"]) in asked
    assert ("GET", token_registry.user, ["repository:tok/ok:pull"]) in asked
    # anonymous pulls of public/ work (the token service grants them), pushes do not
    public = push_and_fetch(token_registry, "public/thing", tmp_path)
    docker_config(isolated_home).unlink()
    assert Repository(Endpoint(token_registry.host, "public/thing")).blob_size(public) == 3000
    with pytest.raises(Unauthorized, match="authentication required \\(run `pybuild login"):
        Repository(Endpoint(token_registry.host, "tok/ok")).blob_size(public)
    login_file(isolated_home, token_registry, password="wrong")
    with pytest.raises(Unauthorized, match="incorrect username or password \\(run `pybuild login"):
        Repository(Endpoint(token_registry.host, "tok/ok")).get_manifest("latest")


def test_identity_token_uses_oauth2_post(token_registry, isolated_home, tmp_path):
    rt = token_registry.tokens.identity_token(token_registry.user)
    write_json(docker_config(isolated_home), {"auths": {token_registry.host: {
        "auth": b64(token_registry.user, "unused"), "identitytoken": rt}}})
    n = len(token_registry.tokens.requests)
    push_and_fetch(token_registry, "tok/identity", tmp_path)
    methods = {m for m, _, _ in token_registry.tokens.requests[n:]}
    assert methods == {"POST"}


def test_token_refreshed_on_expiry(tmp_path, isolated_home):
    with run_registry(tmp_path / "reg", auth="token", token_expires_in=2) as reg:
        login_file(isolated_home, reg)
        r = Repository(Endpoint(reg.host, "tok/expiry"))
        assert r.blob_size(digest_bytes(b"a")) is None
        n = len(reg.tokens.requests)
        assert r.blob_size(digest_bytes(b"b")) is None
        assert len(reg.tokens.requests) == n                  # cached
        time.sleep(1.2)
        assert r.blob_size(digest_bytes(b"c")) is None
        assert len(reg.tokens.requests) == n + 1              # refreshed before it ran out


@pytest.mark.parametrize("fixture", ["auth_registry", "token_registry"])
def test_login_logout(fixture, request, isolated_home, tmp_path):
    reg = request.getfixturevalue(fixture)
    cfg = docker_config(isolated_home)
    with pytest.raises(Unauthorized, match="incorrect username or password"):
        auth.login(reg.host, reg.user, "wrong")
    assert not cfg.exists()
    assert auth.login(reg.host, reg.user, reg.password) == cfg
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    assert json.loads(cfg.read_text()) == {"auths": {reg.host: {"auth": b64(reg.user, reg.password)}}}
    assert credentials(reg.host) == (reg.user, reg.password)
    push_and_fetch(reg, f"login/{fixture.replace('_', '-')}", tmp_path)
    assert auth.logout(reg.host) is True
    assert json.loads(cfg.read_text()) == {"auths": {}}
    assert credentials(reg.host) is None
    assert auth.logout(reg.host) is False


def test_login_into_creds_store(auth_registry, isolated_home, helper):
    cfg = write_json(docker_config(isolated_home), {"credsStore": "pbtest"})
    auth.login(auth_registry.host, auth_registry.user, auth_registry.password)
    user, pw = auth_registry.user, auth_registry.password
    assert json.loads(helper.read_text()) == {auth_registry.host: [user, pw]}
    assert json.loads(cfg.read_text()) == {"credsStore": "pbtest"}
    assert credentials(auth_registry.host) == (auth_registry.user, auth_registry.password)
    assert auth.logout(auth_registry.host) is True
    assert json.loads(helper.read_text()) == {}


def test_login_to_docker_io_key(isolated_home):
    assert auth.server_url("docker.io") == "https://index.docker.io/v1/"
    assert auth.server_url("index.docker.io") == "https://index.docker.io/v1/"
    assert auth.server_url("127.0.0.1:5000") == "127.0.0.1:5000"


def test_login_replaces_a_stale_podman_entry(auth_registry, isolated_home, tmp_path):
    reg = auth_registry
    podman = write_json(isolated_home / ".config/containers/auth.json", {"auths": {
        "other.example": {"auth": b64("o", "o")}, reg.host: {"auth": b64(reg.user, "stale")},
        f"{reg.host}/team": {"auth": b64("team", "t")}}})
    runtime = write_json(tmp_path / "run/containers/auth.json",
                         {"auths": {"else.example": {"auth": b64("e", "e")}}})
    before = runtime.read_text()
    auth.login(reg.host, reg.user, reg.password)
    assert credentials(reg.host) == (reg.user, reg.password)        # not the stale podman one
    assert json.loads(podman.read_text())["auths"] == {              # only that host's entry, in place
        "other.example": {"auth": b64("o", "o")}, reg.host: {"auth": b64(reg.user, reg.password)},
        f"{reg.host}/team": {"auth": b64("team", "t")}}
    assert runtime.read_text() == before                             # no entry for it: untouched
    assert json.loads(docker_config(isolated_home).read_text())["auths"] == {
        reg.host: {"auth": b64(reg.user, reg.password)}}
    assert auth.logout(reg.host) is True
    assert reg.host not in json.loads(podman.read_text())["auths"]
    assert credentials(reg.host) is None


def test_login_keeps_a_symlinked_config_and_its_order(auth_registry, isolated_home, tmp_path):
    reg = auth_registry
    real = write_json(tmp_path / "dotfiles/docker.json", {})
    real.write_text(json.dumps({"zeta": 1, "auths": {"z.example": {"auth": b64("z", "z")},
                                                    reg.host: {"auth": b64("old", "old")},
                                                    "a.example": {"auth": b64("a", "a")}}, "alpha": 2}))
    link = docker_config(isolated_home)
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    auth.login(reg.host, reg.user, reg.password)
    assert link.is_symlink() and link.resolve() == real
    text = real.read_text()
    assert text.startswith('{\n\t"zeta": 1,\n\t"auths": {\n\t\t"z.example"')     # docker's MarshalIndent
    data = json.loads(text)
    assert list(data) == ["zeta", "auths", "alpha"]
    assert list(data["auths"]) == ["z.example", reg.host, "a.example"]
    assert data["auths"][reg.host] == {"auth": b64(reg.user, reg.password)}
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
