"""One repository on one registry endpoint, as the distribution spec (v1.1) defines it:
manifests (get/head/put), blobs (size, streamed and verified fetch with Range resume, mount,
monolithic or chunked push) and tags. Auth and transport are auth.py's and http.py's."""
from __future__ import annotations

import hashlib
import json
import os
import urllib.parse
from dataclasses import dataclass

from cache.blobs import check_digest, is_digest
from cache.compress import CHUNK
from cache.image import MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST
from cache.keys import digest_bytes
from cache.registry import auth as _auth
from cache.registry import http
from cache.registry.config import Endpoint
from cache.registry.errors import DigestMismatch, NotFound, RegistryError, parse_error, sanitize, unauthorized

MANIFEST_TYPES = (MT_OCI_INDEX, MT_OCI_MANIFEST, MT_DOCKER_LIST, MT_DOCKER_MANIFEST)
MT_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                     "application/vnd.docker.distribution.manifest.v1+prettyjws")
MANIFEST_MAX = 4 << 20           # registries SHOULD accept manifests up to 4 MiB
MONOLITHIC_MAX = 16 << 20        # one PUT up to here (moby#17841: faster than PATCHes)
CHUNK_SIZE = 16 << 20            # PATCH size above it (raised to OCI-Chunk-Min-Length)
ERROR_BODY_MAX = 1 << 16


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str


def manifest_media_type(raw: bytes, content_type: str | None = None, what: str = "manifest") -> str:
    """The media type of manifest bytes: their `mediaType`, which must agree with a manifest
    Content-Type; else the Content-Type; else guessed from the shape (index vs manifest)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(f"{what}: not a JSON manifest") from None
    if not isinstance(body, dict):
        raise RegistryError(f"{what}: not a JSON manifest")
    ct = (content_type or "").partition(";")[0].strip().lower()
    declared = body.get("mediaType")
    if body.get("schemaVersion") == 1 or ct in MT_DOCKER_SCHEMA1:
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported (push it again "
                            "with a current docker, podman or pybuild)")
    if isinstance(declared, str) and declared:
        if ct in MANIFEST_TYPES and ct != declared:
            raise RegistryError(f"{what}: Content-Type {ct} does not match its mediaType "
                                f"{sanitize(declared, 100)}")
        return declared
    if ct in MANIFEST_TYPES:
        return ct
    return MT_OCI_INDEX if "manifests" in body else MT_OCI_MANIFEST


def _with_digest(location: str, digest: str) -> str:
    """`location` with ?digest= added, keeping whatever query it carries exactly."""
    return location + ("&" if "?" in location else "?") + "digest=" + urllib.parse.quote(digest, safe=":")


def _range_end(value: str | None) -> int | None:
    """Last byte offset of a `Range: 0-N` upload status (None when absent or unreadable)."""
    if not value:
        return None
    value = value.removeprefix("bytes=").strip()
    start, sep, end = value.partition("-")
    try:
        return int(end) if sep else None
    except ValueError:
        return None


class _Region:
    """A readable over bytes [offset, offset+length) of a file, reporting progress."""

    def __init__(self, path, offset: int, length: int, progress=None):
        self.f = open(path, "rb")  # noqa: SIM115 - closed by http.client's caller (http._send)
        self.f.seek(offset)
        self.pos, self.left, self.progress = offset, length, progress

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n) if n else b""
        self.left -= len(data)
        self.pos += len(data)
        if data and self.progress is not None:
            self.progress(self.pos)
        return data

    def close(self) -> None:
        self.f.close()


class _Restart(Exception):
    """The upload session is gone: start a new one."""


class Repository:
    def __init__(self, endpoint: Endpoint, *, push: bool = False, tls_verify: bool = True,
                 authenticator: _auth.Authenticator | None = None):
        self.endpoint, self.host, self.path = endpoint, endpoint.host, endpoint.path
        self.name = endpoint.name
        self.push, self.tls_verify = push, tls_verify
        self._authenticator = authenticator
        self.chunk_size = CHUNK_SIZE
        self.monolithic_max = MONOLITHIC_MAX

    # ---- plumbing ---------------------------------------------------------------------------

    @property
    def auth(self) -> _auth.Authenticator:
        if self._authenticator is None:
            self._authenticator = _auth.authenticator(self.host, insecure=self.endpoint.insecure,
                                                      tls_verify=self.tls_verify, path=self.path)
        return self._authenticator

    def _scopes(self, push: bool | None = None) -> list[str]:
        push = self.push if push is None else push
        return [f"repository:{self.path}:pull" + (",push" if push else "")]

    def _url(self, tail: str) -> str:
        return f"{self.auth.base}/v2/{self.path}/{tail}"

    def _request(self, method: str, url: str, *, what: str, headers: dict | None = None, body=None,
                 scopes: list[str] | None = None, retry: bool = True) -> http.Response:
        """A request with this repository's credentials; a 401 gets a fresh token (with the
        scope the challenge asks for) and the request once more. Credentials go only to the
        registry's own scheme and host: a Location or Link elsewhere gets the request bare."""
        scopes = list(scopes or self._scopes())
        own = http.origin(url) == http.origin(self.auth.base)
        for attempt in range(3):
            h = dict(headers or {})
            if own:
                h.update(self.auth.headers(scopes, self.name))
            resp = http.request(method, url, headers=h, body=body, verify=self.auth.verify,
                                retry=retry, what=what)
            if resp.status == 401 and attempt < 2 and self.auth.retry_401(resp, scopes, self.name):
                resp.drain()
                continue
            return resp
        return resp

    def _fail(self, resp: http.Response, what: str, data: bytes | None = None) -> RegistryError:
        """The one-line error for an unexpected response (reads its small body)."""
        if data is None:
            try:
                data = resp.read_all(ERROR_BODY_MAX)
            except RegistryError:
                data = b""
        resp.close()
        code, message = parse_error(data)
        if resp.status in (401, 403):
            creds = self.auth.creds
            if resp.status == 401 and creds:
                detail = "incorrect username or password"
            else:
                detail = message or ("requested access to the resource is denied" if resp.status == 403
                                     else "authentication required")
            return unauthorized(self.name, self.host, detail)
        text = f"{code.lower().replace('_', ' ')}: {message}" if code else message
        msg = f"{self.name}: {what}: {resp.status} {resp.reason}" + (f" ({text})" if text else "")
        if resp.status == 404:
            return NotFound(msg)
        if code in ("DIGEST_INVALID", "SIZE_INVALID"):
            return DigestMismatch(msg)
        return RegistryError(msg)

    def _ref(self, reference: str) -> str:
        return f"{self.name}@{reference}" if is_digest(reference) else f"{self.name}:{reference}"

    # ---- manifests --------------------------------------------------------------------------

    def get_manifest(self, reference: str, accept=MANIFEST_TYPES) -> Manifest:
        what = self._ref(reference)
        resp = self._request("GET", self._url(f"manifests/{reference}"), what="GET manifest",
                             headers={"Accept": ", ".join(accept)})
        with resp:
            if resp.status == 404:
                resp.drain()
                raise NotFound(f"manifest unknown: {what} not found")
            if resp.status != 200:
                raise self._fail(resp, "GET manifest")
            raw = resp.read_all(MANIFEST_MAX)
        digest = digest_bytes(raw)
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(f"{what}: the registry sent a manifest whose digest is {digest}")
        mt = manifest_media_type(raw, resp.header("Content-Type"), what)
        if accept and mt not in accept:
            raise RegistryError(f"{what}: manifest type {sanitize(mt, 100)} is not one of "
                                f"{', '.join(accept)}")
        return Manifest(raw, mt, digest)

    def head_manifest(self, reference: str) -> tuple[str, str, int] | None:
        """(digest, media type, size) or None when the registry does not have it."""
        resp = self._request("HEAD", self._url(f"manifests/{reference}"), what="HEAD manifest",
                             headers={"Accept": ", ".join(MANIFEST_TYPES)})
        with resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise self._fail(resp, "HEAD manifest", b"")
        digest = resp.header("Docker-Content-Digest")
        mt = (resp.header("Content-Type") or "").partition(";")[0].strip()
        size = resp.header("Content-Length")
        if not is_digest(digest) or mt not in MANIFEST_TYPES or not (size or "").isdigit():
            m = self.get_manifest(reference)       # a registry that says too little on HEAD
            return m.digest, m.media_type, len(m.raw)
        if is_digest(reference) and digest != reference:
            raise DigestMismatch(f"{self._ref(reference)}: the registry says its digest is {digest}")
        return digest, mt, int(size)

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        digest = digest_bytes(raw)
        if is_digest(reference) and reference != digest:
            raise DigestMismatch(f"{self._ref(reference)}: these manifest bytes hash to {digest}")
        resp = self._request("PUT", self._url(f"manifests/{reference}"), what="PUT manifest",
                             scopes=self._scopes(True), body=raw,
                             headers={"Content-Type": media_type, "Content-Length": str(len(raw))})
        with resp:
            if resp.status not in (200, 201, 202, 204):
                raise self._fail(resp, f"PUT manifest {reference}")
            resp.drain()
        said = resp.header("Docker-Content-Digest")
        if said and said.startswith("sha256:") and said != digest:
            raise DigestMismatch(f"{self._ref(reference)}: the registry stored {sanitize(said, 80)}, "
                                 f"not {digest}")
        return digest

    def tags(self) -> list[str]:
        out: list[str] = []
        url = self._url("tags/list")
        while url:
            resp = self._request("GET", url, what="GET tags")
            with resp:
                if resp.status == 404:
                    resp.drain()
                    raise NotFound(f"repository unknown: {self.name} not found")
                if resp.status != 200:
                    raise self._fail(resp, "GET tags")
                data = resp.read_all(16 << 20)
            try:
                out += [t for t in json.loads(data).get("tags") or [] if isinstance(t, str)]
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.name}: tags list is not JSON") from None
            url = None
            for part in (resp.header("Link") or "").split(","):
                target, _, rest = part.partition(";")
                if 'rel="next"' in rest.replace(" ", "") and target.strip().startswith("<"):
                    url = urllib.parse.urljoin(resp.url, target.strip()[1:-1])
        return out

    # ---- blobs ------------------------------------------------------------------------------

    def blob_size(self, digest: str) -> int | None:
        check_digest(digest)
        resp = self._request("HEAD", self._url(f"blobs/{digest}"), what="HEAD blob")
        with resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise self._fail(resp, f"HEAD blob {digest}", b"")
        size = resp.header("Content-Length")
        return int(size) if size and size.isdigit() else None

    def fetch_blob(self, digest: str, out, *, size: int | None = None, progress=None) -> int:
        """Stream the blob into `out` (binary, written from where it stands), hashing as it
        comes; a dropped connection resumes with Range from the bytes already written (a
        registry that ignores Range has the known prefix skipped). DigestMismatch when the
        bytes or their count are wrong: then nothing written may be trusted."""
        check_digest(digest)
        sha = hashlib.sha256()
        written, backoff = 0, http.Backoff()
        while True:
            headers = {"Range": f"bytes={written}-"} if written else {}
            resp = self._request("GET", self._url(f"blobs/{digest}"), what="GET blob", headers=headers)
            try:
                skip = 0
                if resp.status == 404:
                    raise NotFound(f"blob unknown: {self.name}@{digest} not found")
                if written and resp.status == 206:
                    got = (resp.header("Content-Range") or "").removeprefix("bytes ").partition("-")[0]
                    if got.strip() != str(written):
                        raise RegistryError(f"{self.name}@{digest}: asked for bytes from {written}, "
                                            f"got Content-Range {sanitize(resp.header('Content-Range'), 80)}")
                elif resp.status == 200:
                    skip = written
                else:
                    raise self._fail(resp, f"GET blob {digest}")
                while True:
                    data = resp.read(CHUNK)
                    if not data:
                        break
                    if skip:
                        cut = min(skip, len(data))
                        skip -= cut
                        data = data[cut:]
                        if not data:
                            continue
                    written += len(data)
                    if size is not None and written > size:
                        raise DigestMismatch(f"{self.name}@{digest}: more than the {size} bytes expected")
                    sha.update(data)
                    out.write(data)
                    if progress is not None:
                        progress(written)
                break
            except http.TransportError as e:
                if not backoff.again():
                    raise RegistryError(f"{self.name}@{digest}: {e} ({backoff.failures} tries, "
                                        f"{written} bytes in)") from None
            finally:
                resp.close()
        if size is not None and written != size:
            raise DigestMismatch(f"{self.name}@{digest}: got {written} bytes, expected {size}")
        got = "sha256:" + sha.hexdigest()
        if got != digest:
            raise DigestMismatch(f"{self.name}@{digest}: the bytes received hash to {got}")
        return written

    def mount_blob(self, digest: str, from_path: str) -> bool:
        """Cross-repository mount: True when the registry mounted it (201); else False, having
        abandoned the upload session a 202 opened."""
        check_digest(digest)
        q = urllib.parse.urlencode({"mount": digest, "from": from_path})
        scopes = [*self._scopes(True), f"repository:{from_path}:pull"]
        resp = self._request("POST", self._url(f"blobs/uploads/?{q}"), what="POST mount", scopes=scopes,
                             headers={"Content-Length": "0"})
        with resp:
            resp.drain()
        if resp.status == 201:
            return True
        loc = resp.header("Location")
        if resp.status == 202 and loc:
            try:
                self._request("DELETE", urllib.parse.urljoin(resp.url, loc), what="DELETE upload",
                              scopes=scopes, retry=False).close()
            except RegistryError:
                pass
        return False

    def _start_upload(self) -> tuple[str, int]:
        """POST a new session: (absolute Location with its query as given, OCI-Chunk-Min-Length)."""
        resp = self._request("POST", self._url("blobs/uploads/"), what="POST upload",
                             scopes=self._scopes(True), headers={"Content-Length": "0"})
        with resp:
            if resp.status != 202 or not resp.header("Location"):
                raise self._fail(resp, "POST upload")
            resp.drain()
        try:
            min_len = int(resp.header("OCI-Chunk-Min-Length") or 0)
        except ValueError:
            min_len = 0
        return urllib.parse.urljoin(resp.url, resp.header("Location")), min_len

    def _finish_upload(self, location: str, digest: str, *, body=None, length: int = 0,
                       size: int | None = None) -> None:
        """The closing PUT. Its answer may be lost after the registry committed the blob (a 5xx
        or a dropped connection, then 404 for the session it closed): each failure asks the
        registry (HEAD) before it tries again, so a blob that arrived is never sent twice. A
        5xx is retried on the same session; a connection dropped while a body was going out
        starts a new session (_Restart), as the old one may hold part of it."""
        backoff = http.Backoff()
        while True:
            try:
                resp = self._request("PUT", _with_digest(location, digest), what="PUT blob",
                                     body=body, scopes=self._scopes(True), retry=False,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(length)})
            except http.TransportError as e:
                if size is not None and self._arrived(digest, size):
                    return
                if body is not None:  # part of the body may be in the session: start a new one
                    raise _Restart from None
                resp, error = None, str(e)
            if resp is not None:
                with resp:
                    if resp.status in (201, 204):
                        resp.drain()
                        return
                    data = resp.read_all(ERROR_BODY_MAX)
                code, _ = parse_error(data)
                gone = resp.status == 404 or code == "BLOB_UPLOAD_UNKNOWN"
                if not gone and resp.status not in http.RETRY_STATUS:
                    raise self._fail(resp, f"PUT blob {digest}", data)
                error = f"{resp.status} {resp.reason}".strip()
            if size is not None and self._arrived(digest, size):
                return
            if resp is not None and gone:
                raise _Restart
            if not backoff.again(http.retry_after(resp) if resp is not None else None):
                raise RegistryError(f"{self.name}: PUT blob {digest}: {error} after {backoff.failures} "
                                    "attempts")

    def _arrived(self, digest: str, size: int) -> bool:
        """Whether the registry has blob `digest` of `size` bytes (False when it cannot say)."""
        try:
            return self.blob_size(digest) == size
        except RegistryError:
            return False

    def push_blob(self, digest: str, size: int, path, *, progress=None) -> None:
        """Upload the file at `path` as blob `digest`: one POST + PUT up to MONOLITHIC_MAX, else
        PATCHes of chunk_size (at least the registry's OCI-Chunk-Min-Length) and a closing PUT.
        A failed chunk resumes from what `GET <location>` says arrived; a lost session restarts."""
        check_digest(digest)
        try:
            actual = os.path.getsize(path)
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror}") from None
        if actual != size:
            raise RegistryError(f"{path}: {actual} bytes, but blob {digest} should have {size}")
        for restart in range(3):
            try:
                if size <= self.monolithic_max:
                    loc, _ = self._start_upload()
                    self._finish_upload(loc, digest, length=size, size=size,
                                        body=lambda: _Region(path, 0, size, progress))
                else:
                    self._push_chunked(digest, size, path, progress)
                return
            except (_Restart, http.TransportError) as e:
                if restart == 2:
                    raise RegistryError(f"{self.name}: upload of {digest} failed: "
                                        f"{e if str(e) else 'upload session lost'}") from None

    def _push_chunked(self, digest: str, size: int, path, progress) -> None:
        loc, min_len = self._start_upload()
        chunk = max(self.chunk_size, min_len)
        offset, backoff = 0, http.Backoff()
        while offset < size:
            n = min(chunk, size - offset)
            try:
                resp = self._request(
                    "PATCH", loc, what="PATCH blob", scopes=self._scopes(True), retry=False,
                    body=lambda o=offset, n=n: _Region(path, o, n, progress),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(n),
                             "Content-Range": f"{offset}-{offset + n - 1}"})
            except http.TransportError:
                resp = None
            if resp is not None:
                with resp:
                    data = resp.read_all(ERROR_BODY_MAX)
                if resp.status == 202:
                    loc = urllib.parse.urljoin(resp.url, resp.header("Location") or loc)
                    end = _range_end(resp.header("Range"))
                    offset = end + 1 if end is not None and end + 1 > offset else offset + n
                    continue
                code, _ = parse_error(data)
                if resp.status == 404 or code == "BLOB_UPLOAD_UNKNOWN":
                    raise _Restart
                if resp.status not in http.RETRY_STATUS and resp.status != 416:
                    raise self._fail(resp, f"PATCH blob {digest}", data)
            if not backoff.again(http.retry_after(resp) if resp is not None else None):
                raise RegistryError(f"{self.name}: upload of {digest} keeps failing at byte {offset}")
            loc, offset = self._upload_status(loc)
        self._finish_upload(loc, digest, size=size)

    def _upload_status(self, loc: str) -> tuple[str, int]:
        """GET <location>: (location, next offset) of a live session; _Restart when it is gone."""
        try:
            resp = self._request("GET", loc, what="GET upload", scopes=self._scopes(True))
        except http.TransportError:
            raise _Restart from None
        with resp:
            resp.drain()
        end = _range_end(resp.header("Range"))
        if resp.status not in (200, 204) or end is None:
            raise _Restart
        # "0-0" is what distribution says for an empty session too: start over at 0 then
        return urllib.parse.urljoin(resp.url, resp.header("Location") or loc), (end + 1 if end else 0)
