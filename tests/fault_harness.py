"""Fault harness: the promises pybuild makes when its input is bad or its process dies, checked
generatively. The suite runs it small (tests/grammar/test_fuzz_corpus.py, tests/e2e/test_faults.py);
`python bench/faults.py --fuzz 100000 --kills 100 --races 25 --archives 500` runs it large.

Four checks, each returning a list of failures (empty when every promise held), each failure a
line naming the seed or case that reproduces it:

- fuzz: mutated Dockerfiles through grammar.parse + grammar.validate in-process: an AST or a
  located DockerfileError, never another exception;
- kills: builds SIGKILLed at random moments, at least half of them (and every one aimed at a
  COPY's mounted overlay) inside a step, seen from outside the build; then every tag resolves,
  images/inspect/save work, a rebuild gives the uninterrupted build's image ID, and after
  `prune` no scratch dir and no mount is left under the store root;
- races: two build loops, `rmi` and `prune`/`prune -a` in parallel: each loop builds at least
  once, every build that exits 0 leaves a tag that inspect and save can use, and one that loses
  a race fails as a user's error (exit 1, one `pybuild: error:` line);
- archives: mutations of a valid `pybuild save` archive: `load` exits 0, or 1 with one
  `pybuild: error:` line and no traceback, the store unchanged and nothing left in its tmp/.

Here (under tests/) so the tests stay self-contained; bench/faults.py imports it by path. Needs
the repo root and tests/ on sys.path (pytest and bench/faults.py put them there)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from busybox_fixture import REPO, copy_store

from runtime import mountinfo

SHARED_CANDIDATES = [Path(p) for p in (os.environ.get("PYBUILD_CONFORMANCE"),) if p] + [
    REPO.parent / "shared" / "conformance", Path("/work/shared/conformance")]


# --- fuzz: mutated Dockerfiles --------------------------------------------------------------

def dockerfile_corpus() -> list[bytes]:
    """Seeds: BuildKit's parser tables (positive and negative), their heredoc cases, the repo's
    own Dockerfiles (fixtures, interop), and a few lines naming every instruction and flag."""
    seeds: list[bytes] = []
    conf = next((p for p in SHARED_CANDIDATES if p.is_dir()), None)
    if conf is not None:
        parser = conf / "dockerfile-parser"
        for sub in ("testfiles", "testfiles-negative"):
            seeds += [p.read_bytes() for p in sorted((parser / sub).glob("*/Dockerfile"))]
        heredocs = parser / "extracted-heredoc-cases.json"
        if heredocs.is_file():
            seeds.append(json.loads(heredocs.read_text())["dockerfile"].encode())
    seeds += [p.read_bytes() for p in sorted(REPO.glob("fixtures/**/Dockerfile"))]
    seeds += _dockerfiles_in_tests()
    seeds.append(b"""# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE:-busybox} AS base
ENV A=1 B="two words" C=${A:+set}
RUN --mount=type=cache,target=/c,readonly=false --mount=type=bind,rw=true,target=/m echo $A
RUN --network=none --security=sandbox <<EOF
echo hi
EOF
COPY --chown=app:app --chmod=0755 --link --from=base /a /b
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 x y
HEALTHCHECK --interval=.5s --timeout=1m30s --start-period=2s --retries=3 CMD true
EXPOSE 80/tcp 53/udp 8000-8010
STOPSIGNAL SIGKILL
USER 1000:1000
WORKDIR /app/
VOLUME ["/data"]
SHELL ["/bin/sh", "-c"]
ONBUILD RUN echo child
LABEL a=b "c d"=e
ENTRYPOINT ["sh"]
CMD ["-c", "true"]
""")
    return seeds


def _dockerfiles_in_tests() -> list[bytes]:
    """The Dockerfiles written inline in the test suite (the interop cases, the e2e builds, the
    grammar tests): every string constant that holds a FROM line."""
    import ast
    out = set()
    for p in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    ("FROM " in node.value or "from " in node.value[:20]) and "\n" in node.value:
                out.add(node.value.encode("utf-8", "surrogateescape"))
    return sorted(out)


TOKENS = [b"\\\n", b"`", b"<<EOF", b"<<-'E'", b"EOF\n", b"[", b"]", b'"', b"'", b"${", b"}", b":-",
          b":+", b":?", b"$", b"--", b"=", b",", b"\r\n", b"\xef\xbb\xbf", b"# escape=`\n", b"#",
          b"ONBUILD ", b"\t", b"\x00", b"\xff", b"\n", b" ", b"--mount=", b"type=cache", b"target=",
          b"--from=", b"--chmod=", b"--interval=", b"1h2m3.5s", b"-", b"0x", b"/", b"..", b"*", b"?",
          b"FROM ", b"RUN ", b"COPY ", b"ADD ", b"ENV ", b"ARG ", b"HEALTHCHECK ", b"EXPOSE ",
          b"STOPSIGNAL ", b"USER ", b"WORKDIR ", b"SHELL ", b"CMD ", b"ENTRYPOINT ", b"LABEL "]

NESTS = [(b"${A:-", b"}"), (b"${A:+", b"}"), (b"${A#", b"}"), (b"[", b"]"), (b'["', b'"]'),
         (b"$(", b")"), (b"'", b"'"), (b'"', b'"'), (b"\\", b""), (b"ONBUILD ", b"")]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """1-6 edits: wrap a span in up to 1,000 levels of nesting, insert a token (sometimes
    repeated up to 400 times), delete a span, flip a byte, duplicate/swap/drop a line, or splice
    in a line of another seed."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        pos = rng.randint(0, len(buf))
        op = rng.random()
        if op < 0.04:
            left, right = rng.choice(NESTS)
            k = rng.choice([2, 10, 100, 300, 1000])
            end = rng.randint(pos, min(len(buf), pos + 20))
            buf[pos:end] = left * k + buf[pos:end] + right * k
        elif op < 0.3:
            tok = rng.choice(TOKENS)
            buf[pos:pos] = tok * (rng.randint(2, 400) if rng.random() < 0.05 else 1)
        elif op < 0.45:
            del buf[pos:pos + rng.randint(1, 20)]
        elif op < 0.6:
            if buf:
                buf[min(pos, len(buf) - 1)] = rng.randint(0, 255)
        else:
            lines = bytes(buf).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op < 0.7:
                lines.insert(j, lines[i])
            elif op < 0.8:
                lines[i], lines[j] = lines[j], lines[i]
            elif op < 0.88:
                del lines[i]
            else:
                other = rng.choice(corpus).split(b"\n")
                lines.insert(j, rng.choice(other))
            buf = bytearray(b"\n".join(lines))
    return bytes(buf)


def check_dockerfile(data: bytes) -> str | None:
    """None if `data` parses to an AST (and validates or fails validation with a located
    DockerfileError) or fails parsing with a DockerfileError; else what went wrong."""
    import grammar
    from grammar import ast
    try:
        df = grammar.parse(data)
    except grammar.DockerfileError as e:
        if not (isinstance(e.line, int) and e.line >= 0 and str(e).startswith("Dockerfile")):
            return f"parse: badly located DockerfileError {e!r}"
        return None
    except BaseException as e:  # noqa: BLE001 - the finding itself
        return f"parse: {type(e).__name__}: {str(e)[:200]}"
    if not isinstance(df, ast.Dockerfile):
        return f"parse returned {type(df).__name__}"
    for inst in df.instructions:
        if not 1 <= inst.line <= inst.end_line:
            return f"instruction {inst!r:.80} has lines {inst.line}..{inst.end_line}"
    try:
        grammar.validate(df)
    except grammar.DockerfileError as e:
        if not (isinstance(e.line, int) and e.line >= 1):
            return f"validate: DockerfileError without a line: {e!r}"
    except BaseException as e:  # noqa: BLE001
        return f"validate: {type(e).__name__}: {str(e)[:200]}"
    return None


def fuzz(n: int, seed: int = 0, corpus: list[bytes] | None = None) -> list[str]:
    """n mutated Dockerfiles; case i is reproducible from (seed, i) alone."""
    corpus = corpus or dockerfile_corpus()
    failures: list[str] = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        data = mutate(rng, rng.choice(corpus), corpus)
        problem = check_dockerfile(data)
        if problem:
            failures.append(f"fuzz seed={seed} case={i}: {problem} (input {data[:120]!r}"
                            f"{'...' if len(data) > 120 else ''}, {len(data)} bytes)")
    return failures


# --- the CLI and the store ------------------------------------------------------------------

def cli(root: Path, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """`pybuild --root ROOT ARGS` as a user runs it (text output)."""
    return subprocess.run([sys.executable, "-m", "builder", "--root", str(root), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False,
                          **kw)


def mounts_under(root: Path, pid: int | str = "self") -> list[str]:
    """Mount points under `root` as process `pid` sees them (its mount namespace: a build
    mounts its overlays in a private one, `runtime.mountns`); [] once the process is gone."""
    return [m.mount_point for m in mountinfo.mounts_under(root, f"/proc/{pid}/mountinfo")]


def store_state(root: Path) -> dict[str, str]:
    """Everything a user could observe of a store except tmp/: path -> kind and content hash."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == "tmp" or rel_dir.startswith("tmp/"):
            dirs[:] = []
            continue
        for n in sorted(files):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            if rel == ".lock" or n.endswith(".lock"):
                continue
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif rel.startswith("layers/"):
                out[rel] = "file"  # layer contents: presence is enough, and cheap
            else:
                with open(p, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
        for n in dirs:
            out[os.path.relpath(os.path.join(dirpath, n), root) + "/"] = "dir"
    return out


def tmp_leftovers(root: Path) -> list[str]:
    tmp = root / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


def tags_of(root: Path) -> dict[str, str]:
    try:
        return json.loads((root / "tags.json").read_text())
    except FileNotFoundError:
        return {}


def check_store(root: Path, where: str) -> list[str]:
    """Every tag resolves: images lists, inspect and save of every tag succeed."""
    bad = []
    r = cli(root, "images")
    if r.returncode != 0:
        bad.append(f"{where}: images exit {r.returncode}: {r.stderr.strip()[-300:]}")
    try:
        tags = sorted(tags_of(root))
    except ValueError as e:
        return [*bad, f"{where}: tags.json unreadable: {e}"]
    for tag in tags:
        r = cli(root, "inspect", tag)
        if r.returncode != 0:
            bad.append(f"{where}: inspect {tag} exit {r.returncode}: {r.stderr.strip()[-300:]}")
    if tags:
        out = root.parent / f"{root.name}-check.tar"
        r = cli(root, "save", "-o", str(out), *tags)
        if r.returncode != 0:
            bad.append(f"{where}: save {' '.join(tags)} exit {r.returncode}: {r.stderr.strip()[-300:]}")
        out.unlink(missing_ok=True)
    return bad


def unclean_error(r: subprocess.CompletedProcess) -> str | None:
    """None if a failed command failed as a user's error must: exit 1, stderr one
    `pybuild: error:` line, no traceback; else what was wrong with it."""
    lines = r.stderr.splitlines()
    bad = [f"exit {r.returncode}"] if r.returncode != 1 else []
    if "Traceback" in r.stderr:
        bad.append("a traceback")
    if len(lines) != 1 or not lines[0].startswith("pybuild: error: "):
        bad.append("stderr is not one 'pybuild: error:' line")
    return ", ".join(bad) or None


def image_id(r: subprocess.CompletedProcess) -> str | None:
    """The image ID a `build -q` printed."""
    line = r.stdout.strip().splitlines()[-1:] if r.returncode == 0 else []
    return line[0] if line and line[0].startswith("sha256:") else None


# --- kills: builds killed at random moments --------------------------------------------------

CRASH_DOCKERFILE = """\
FROM busybox
COPY files/ /files/
RUN cat /files/* | wc -c > /size && mkdir -p /made && cp -r /files /made/
COPY big /big
RUN for i in 1 2 3 4 5 6 7 8; do cp /big /big.$i; done && rm /big.3 && echo done > /state
COPY files/f1 files/f2 /pair/
RUN rm -rf /made/files/f1* && ls /made/files | wc -l > /count
WORKDIR /app
RUN echo "$(cat /size)" > /app/size
"""


def crash_context(ctx: Path, files: int = 3000) -> Path:
    """A context whose COPY and RUN steps take long enough to be killed in the middle."""
    (ctx / "files").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (ctx / "files" / f"f{i}").write_bytes(hashlib.sha256(str(i).encode()).digest() * (i % 50 + 1))
    (ctx / "big").write_bytes(b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(200_000)))
    (ctx / "Dockerfile").write_text(CRASH_DOCKERFILE)
    return ctx


def step_in_progress(pid: int, root: Path) -> str | None:
    """What step work build `pid` is doing now, as seen from outside: an overlay of a COPY or
    WORKDIR mounted under the store in its namespace, a child process (a RUN's sandbox), or
    its scratch dir in the store's tmp/ (a filesystem step's upper dir, from before the mount
    until its layer is committed); None between steps, before the first, or once it is gone."""
    if any("/pybuild-merged-" in m for m in mounts_under(root, pid)):
        return "with an overlay mounted"
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                if f.read().split():
                    return "with a RUN's process running"
        except OSError:
            continue
    if any(n.startswith(f"scratch-{pid}.") for n in tmp_leftovers(root)):
        return "with a step's scratch dir in use"
    return None


def kill_build(p: subprocess.Popen, root: Path) -> str | None:
    """SIGKILL build `p`, stopped first so what it was doing is seen exactly; where in a step the
    kill landed (`step_in_progress`), or None if the build had ended or was between steps."""
    try:
        os.kill(p.pid, signal.SIGSTOP)
    except ProcessLookupError:
        pass
    where = step_in_progress(p.pid, root) if p.poll() is None else None
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    return where if p.wait() == -signal.SIGKILL else None


def _wait_for_overlay(p: subprocess.Popen, root: Path, timeout: float = 120) -> bool:
    """Poll the build's own mountinfo until a COPY's merged overlay shows (True), or it ends."""
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if any("/pybuild-merged-" in m for m in mounts_under(root, p.pid)):
            return True
        time.sleep(0.002)
    return False


def kills(root: Path, reference_root: Path, ctx: Path, n: int, seed: int = 0,
          log=lambda s: None, min_in_step: int | None = None) -> list[str]:
    """Kill `n` builds with SIGKILL at random moments in `root` (a busybox store), then check it.
    The first kill, and a quarter of the others, land the moment a COPY's overlay is mounted (a
    --no-cache build, so one is): a build that ends first is a failure. The others come at a
    random time within an uninterrupted build's duration; one that finds the build finished or
    between steps is retried (twice at most, --no-cache, past start-up). At least `min_in_step`
    kills (default: half, rounded up, and every overlay kill) must land inside a step
    (`step_in_progress`). `reference_root` (another busybox store) gets the uninterrupted
    build: the ID to match."""
    t0 = time.monotonic()
    ref = cli(reference_root, "build", "-q", "--no-cache", "-t", "crash", str(ctx))
    span = time.monotonic() - t0
    want = image_id(ref)
    if want is None:
        return [f"kills: the uninterrupted build failed: {ref.stderr.strip()[-500:]}"]
    failures = []
    in_step = at_mount_kills = 0
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")  # build i's plan, whatever the retries before it
        at_mount = i == 0 or rng.random() < 0.25
        no_cache = at_mount or rng.random() < 0.7
        delay = rng.uniform(0.05, span * 1.1)
        at_mount_kills += at_mount
        for attempt in range(1 if at_mount else 3):
            args = ["build", "-q", "-t", "crash", "-t", f"crash:{i % 2}"]
            args += ["--no-cache"] if no_cache else []
            p = subprocess.Popen([sys.executable, "-m", "builder", "--root", str(root), *args,
                                  str(ctx)], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
            if at_mount:
                seen = _wait_for_overlay(p, root)
                where = kill_build(p, root)
                how = (f"killed {where}" if where else
                       f"not killed in a step (exit {p.returncode}, overlay seen: {seen})")
                if where is None:
                    failures.append(f"kills seed={seed} build {i}: meant to die with a COPY's "
                                    f"overlay mounted, {how}")
            else:
                try:
                    p.wait(delay)
                    where, how = None, f"finished (exit {p.returncode}) before {delay:.2f}s"
                    if p.returncode != 0:
                        failures.append(f"kills seed={seed} build {i}: failed on its own, {how}")
                except subprocess.TimeoutExpired:
                    where = kill_build(p, root)
                    how = f"killed after {delay:.2f}s " + (where or "between steps")
            log(f"build {i + 1}/{n} attempt {attempt + 1}: {how} (an uninterrupted one takes "
                f"{span:.2f}s)")
            failures += check_store(root, f"kills seed={seed} after build {i} attempt {attempt}")
            in_step += where is not None
            if at_mount or where is not None:
                break
            no_cache, delay = True, rng.uniform(span * 0.3, span * 0.8)  # past start-up
    wanted = max(at_mount_kills, (n + 1) // 2) if min_in_step is None else min_in_step
    if in_step < wanted:
        failures.append(f"kills seed={seed}: only {in_step} of {n} kills landed inside a step, "
                        f"{wanted} wanted (a bigger context makes steps longer)")
    r = cli(root, "build", "-q", "-t", "crash", str(ctx))
    if image_id(r) != want:
        failures.append(f"kills seed={seed}: rebuild gave {image_id(r)} (exit {r.returncode}: "
                        f"{r.stderr.strip()[-300:]}), an uninterrupted build {want}")
    r = cli(root, "prune", "-f")
    if r.returncode != 0:
        failures.append(f"kills seed={seed}: prune exit {r.returncode}: {r.stderr.strip()[-300:]}")
    scratch = [n for n in tmp_leftovers(root) if not n.startswith(".")]
    if scratch:
        failures.append(f"kills seed={seed}: after prune, left in tmp/: {scratch[:10]}")
    left = mounts_under(root)
    if left:
        failures.append(f"kills seed={seed}: after prune, still mounted under the store: {left[:10]}")
    failures += check_store(root, f"kills seed={seed} after prune")
    return failures


def unmount_under(root: Path) -> None:
    """Clean-up for the caller (a test's tmp dir must be removable whatever pybuild left)."""
    mountinfo.unmount_under(root)


# --- races: builds, rmi and prune in parallel ------------------------------------------------

def races(root: Path, ctx: Path, rounds: int, seed: int = 0, log=lambda s: None) -> list[str]:
    """Two build loops (each its own tag, cached and --no-cache builds of its own Dockerfile)
    race a loop of tag/rmi of a third name, `prune` and `prune -a`, for `rounds` rounds each.
    A build may lose a race, but only as a user's error does (`unclean_error`), and each loop
    must succeed at least once (else nothing was checked)."""
    failures: list[str] = []
    lock = threading.Lock()

    def fail(msg: str) -> None:
        with lock:
            failures.append(msg)

    def builder(name: str) -> None:
        rng = random.Random(f"{seed}:{name}")
        d = ctx / name
        d.mkdir(parents=True, exist_ok=True)
        built = 0
        for i in range(rounds):
            (d / "f").write_text(f"{name} {i % 3}\n")
            (d / "Dockerfile").write_text(
                f"FROM busybox\nCOPY f /f\nRUN cat /f > /g && echo {name} >> /g\nENV N={i % 3}\n")
            args = ["build", "-q", "-t", name] + (["--no-cache"] if rng.random() < 0.5 else [])
            r = cli(root, *args, str(d))
            if r.returncode != 0:  # losing a race may fail a build, cleanly
                problem = unclean_error(r)
                if problem:
                    fail(f"races seed={seed} {name} round {i}: build failed badly ({problem}): "
                         f"{r.stderr.strip()[-300:]}")
                log(f"{name} round {i + 1}/{rounds}: build failed: {r.stderr.strip()[-200:]}")
                continue
            built += 1
            got = image_id(r)
            ins = cli(root, "inspect", name)
            if ins.returncode != 0:
                fail(f"races seed={seed} {name} round {i}: built {got}, then inspect {name}: "
                     f"{ins.stderr.strip()[-200:]}")
                continue
            out = d.parent / f"{name}.tar"
            sv = cli(root, "save", "-o", str(out), name)
            out.unlink(missing_ok=True)
            if sv.returncode != 0:
                fail(f"races seed={seed} {name} round {i}: built {got}, then save {name}: "
                     f"{sv.stderr.strip()[-200:]}")
            log(f"{name} round {i + 1}/{rounds}")
        if not built:
            fail(f"races seed={seed} {name}: none of {rounds} builds succeeded")

    def collector() -> None:
        rng = random.Random(f"{seed}:gc")
        for i in range(rounds * 2):
            op = rng.choice(["prune", "prune-a", "rmi"])
            if op == "rmi":
                r = cli(root, "tag", "busybox", "scratchtag")
                if r.returncode == 0:
                    r = cli(root, "rmi", "scratchtag")
            else:
                r = cli(root, "prune", "-f", *(["-a"] if op == "prune-a" else []))
            if r.returncode != 0 or "Traceback" in r.stderr:
                fail(f"races seed={seed} {op} round {i}: exit {r.returncode}: {r.stderr.strip()[-200:]}")

    def caught(fn, *args) -> threading.Thread:
        """A thread whose exception is a failure (else it would end only that thread)."""
        def run() -> None:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - the finding itself
                fail(f"races seed={seed} {fn.__name__}{args}: {type(e).__name__}: {e}")
        return threading.Thread(target=run)

    threads = [caught(builder, "one"), caught(builder, "two"), caught(collector)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures += check_store(root, f"races seed={seed} at the end")
    return failures


# --- archives: malformed `pybuild load` input ------------------------------------------------

def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]


def _pack(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, body in members:
            if body is not None:
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
            else:
                tf.addfile(info)
    return buf.getvalue()


def _bad_json(rng: random.Random, value, depth: int = 0):
    """The same document with one subtree replaced by another shape."""
    shapes = [None, 5, -1, "x", "sha256:" + "0" * 64, "../../x", [], {}, [1], [5, None], {"a": 1},
              True, 1e308, "", [[[[]]]]]
    if depth > 6 or not isinstance(value, (dict, list)) or not value or rng.random() < 0.3:
        return rng.choice(shapes)
    if isinstance(value, dict):
        key = rng.choice(sorted(value))
        out = dict(value)
        if rng.random() < 0.2:
            del out[key]
        else:
            out[key] = _bad_json(rng, value[key], depth + 1)
        return out
    out = list(value)
    i = rng.randrange(len(out))
    out[i] = _bad_json(rng, out[i], depth + 1)
    return out


def mutate_archive(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """(what was done, the mutated archive) from a valid docker/OCI archive."""
    op = rng.choice(["truncate", "flip", "json", "json", "json", "drop", "dup", "symlink-loop",
                     "deep-path", "gzip-truncated", "member-json-list"])
    if op == "truncate":
        cut = rng.randrange(len(data))
        return f"truncate at {cut}", data[:cut]
    if op == "flip":
        buf = bytearray(data)
        where = [rng.randrange(len(buf)) for _ in range(rng.randint(1, 8))]
        for i in where:
            buf[i] ^= 1 << rng.randrange(8)
        return f"flip bits at {where}", bytes(buf)
    if op == "gzip-truncated":
        z = gzip.compress(data, mtime=0)
        cut = rng.randrange(len(z) // 2, len(z))
        return f"gzip then truncate at {cut}", z[:cut]
    members = _members(data)
    jsons = [i for i, (m, body) in enumerate(members) if body is not None and
             (m.name.endswith(".json") or (m.name.startswith("blobs/") and body[:1] in b"{["))]
    if op in ("json", "member-json-list") and jsons:
        i = rng.choice(jsons)
        info, body = members[i]
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        new = [doc] if op == "member-json-list" else _bad_json(rng, doc)
        members[i] = (info, json.dumps(new).encode())
        return f"{op} {info.name}", _pack(members)
    if op == "drop" and members:
        i = rng.randrange(len(members))
        name = members[i][0].name
        del members[i]
        return f"drop {name}", _pack(members)
    if op == "symlink-loop":
        a, b = tarfile.TarInfo("manifest.json"), tarfile.TarInfo("loop")
        a.type = b.type = tarfile.SYMTYPE
        a.linkname, b.linkname = "loop", "manifest.json"
        members = [(m, body) for m, body in members if m.name != "manifest.json"]
        return "symlink loop manifest.json <-> loop", _pack([*members, (a, None), (b, None)])
    if op == "deep-path":
        info = tarfile.TarInfo("/".join(["d"] * rng.choice([300, 3000])) + "/f")
        return f"deep path of {info.name.count('/')} levels", _pack([*members, (info, b"x")])
    i = rng.randrange(len(members))  # dup
    return f"duplicate {members[i][0].name}", _pack([*members, members[i]])


def check_load(root: Path, archive: Path, what: str) -> list[str]:
    """`pybuild load` of a (maybe) malformed archive keeps its promises."""
    before = store_state(root)
    tmp_before = tmp_leftovers(root)
    r = cli(root, "load", "-q", "-i", str(archive), timeout=120)
    problem = unclean_error(r) if r.returncode != 0 else "Traceback" in r.stderr and "a traceback"
    bad = [problem] if problem else []
    if r.returncode != 0 and store_state(root) != before:
        bad.append("the store changed")
    left = sorted(set(tmp_leftovers(root)) - set(tmp_before))
    if left:
        bad.append(f"left in tmp/: {left[:5]}")
    if bad:
        return [f"archives {what}: {', '.join(bad)}; stderr: {r.stderr.strip()[-300:]!r}"]
    return []


def archives(root: Path, work: Path, n: int, seed: int = 0, log=lambda s: None) -> list[str]:
    """n mutations of `pybuild save` archives (docker and OCI form) of busybox in `root`."""
    work.mkdir(parents=True, exist_ok=True)
    originals = []
    for fmt in ("docker", "oci"):
        out = work / f"valid-{fmt}.tar"
        r = cli(root, "save", "--format", fmt, "-o", str(out), "busybox")
        if r.returncode != 0:
            return [f"archives: save --format {fmt} failed: {r.stderr.strip()[-300:]}"]
        originals.append(out.read_bytes())
    pristine = work / "pristine"
    shutil.rmtree(pristine, ignore_errors=True)
    copy_store(root, pristine)
    failures = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        what, data = mutate_archive(rng, rng.choice(originals))
        arch = work / "case.tar"
        arch.write_bytes(data)
        found = check_load(root, arch, f"seed={seed} case={i} ({what})")
        failures += found
        if found or tags_of(root) != tags_of(pristine) or store_state(root) != store_state(pristine):
            shutil.rmtree(root)
            copy_store(pristine, root)  # the next case starts from the same store
        log(f"archive {i + 1}/{n}: {what}")
    return failures
