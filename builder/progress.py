"""Build progress in BuildKit's layouts (docker 20.10's progressui): plain lines, a live terminal
view, or JSON lines.

The solver reports events per vertex (start, log, status, cached, done, error, canceled); a
printer renders them. `auto` picks the terminal view only when stderr is a terminal, and `tty`
into a pipe falls back to plain, as docker's CLI does, so CI logs stay plain. The terminal view
is a few ANSI sequences of its own (no rich: a cached rebuild must not pay for its import).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque

TAIL_LINES = 10
TERM_ROWS = 6     # BuildKit's termHeight: log rows under a running step
TERM_PAD = 10     # its termPad: the log rows are this much narrower than the terminal


class Vertex:
    """One line of progress: a step or an internal action such as loading the context."""

    def __init__(self, num: int, name: str):
        self.num = num
        self.name = name
        self.started = time.monotonic()
        self.finished: float | None = None
        self.cached = False
        self.step = False  # a layer step or an image's FROM (a replay shows it CACHED)
        # not in a replay's record: work a replay does not do, or prints from its own inputs
        self.once = False
        self.error: str | None = None
        self.canceled = False  # the build was interrupted while it ran
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.statuses: list[tuple[str, float, float]] = []  # (text, start, end): `=> =>` rows
        self.logged = 0     # log lines so far (the terminal view shows the busiest steps' logs)
        self._partial = b""

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Progress:
    """Base printer: keeps vertices, subclasses decide how to show them. Thread-safe."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.vertices: list[Vertex] = []
        self.t0 = time.monotonic()
        self.expected = 0   # vertices the build will show, as far as the plan tells (N/M)

    def start(self, name: str, *, once: bool = False) -> Vertex:
        with self.lock:
            v = Vertex(len(self.vertices) + 1, name)
            v.once = once
            self.vertices.append(v)
            self.on_start(v)
            return v

    def log(self, v: Vertex, data: bytes) -> None:
        with self.lock:
            data = v._partial + data
            *lines, v._partial = data.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                v.tail.append(line)
                v.logged += 1
                self.on_log(v, line)

    def status(self, v: Vertex, text: str, started: float | None = None) -> None:
        """A finished sub-task of `v` (BuildKit's vertex status: `writing image sha256:...`),
        begun at `started` (monotonic; None: now)."""
        with self.lock:
            now = time.monotonic()
            v.statuses.append((text, now if started is None else started, now))
            self.on_status(v, text, now - (now if started is None else started))

    def cached(self, v: Vertex) -> None:
        with self.lock:
            v.cached = True
            v.finished = time.monotonic()
            self.on_cached(v)

    def explain(self, v: Vertex, text: str | None, reason: dict) -> None:
        """Why step `v` missed the cache (builder.explain): one short line (None: none, said
        already), the structured reason for `--progress json`."""
        with self.lock:
            if text is not None:
                v.tail.append(f"cache miss: {text}")
            self.on_explain(v, text, reason)

    def done(self, v: Vertex) -> None:
        with self.lock:
            self._flush_partial(v)
            v.finished = time.monotonic()
            self.on_done(v)

    def fail(self, v: Vertex, message: str) -> None:
        with self.lock:
            self._flush_partial(v)
            v.finished = time.monotonic()
            v.error = message
            self.on_error(v)

    def cancel(self, v: Vertex) -> None:
        """The step was running when the build was interrupted (^C): BuildKit's CANCELED."""
        with self.lock:
            self._flush_partial(v)
            v.finished = time.monotonic()
            v.canceled = True
            self.on_canceled(v)

    def close(self) -> None:
        pass

    def _flush_partial(self, v: Vertex) -> None:
        if v._partial:
            line = v._partial.decode("utf-8", "replace")
            v._partial = b""
            v.tail.append(line)
            v.logged += 1
            self.on_log(v, line)

    # hooks
    def on_start(self, v: Vertex) -> None: ...
    def on_log(self, v: Vertex, line: str) -> None: ...
    def on_status(self, v: Vertex, text: str, seconds: float) -> None: ...
    def on_cached(self, v: Vertex) -> None: ...
    def on_explain(self, v: Vertex, text: str, reason: dict) -> None: ...
    def on_done(self, v: Vertex) -> None: ...
    def on_error(self, v: Vertex) -> None: ...
    def on_canceled(self, v: Vertex) -> None: ...


def log_time(seconds: float) -> str:
    """A log line's offset into its step, as BuildKit's plain printer writes it."""
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.2f}" if seconds < 100 else f"{seconds:.1f}"


def size_text(n: int) -> str:
    """Bytes as BuildKit's status lines show them (tonistiigi/units, decimal): 375B, 1.23kB."""
    if n < 1000:
        return f"{n}B"
    value, units = n / 1000, ["kB", "MB", "GB", "TB"]
    while value >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.2f}{units[0]}"


class PlainProgress(Progress):
    """BuildKit's plain printer: a vertex's lines under a `#N name` header, a blank line
    between vertices, `#N 0.123 output`, `#N text done` for a status, `#N CACHED`,
    `#N DONE 0.2s`, `#N ERROR: ...`, `#N CANCELED`; `#N ...` when another vertex's lines
    interrupt a running one (whose header comes again when it goes on)."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self.current: Vertex | None = None
        self.first = True

    def _w(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _to(self, v: Vertex) -> None:
        if self.current is v:
            return
        cur, out = self.current, []
        if cur is not None and cur.finished is None:
            out.append(f"#{cur.num} ...\n")
        if not self.first:
            out.append("\n")
        self.first = False
        out.append(f"#{v.num} {v.name}\n")
        self.current = v
        self.stream.write("".join(out))

    def _end(self, v: Vertex, text: str) -> None:
        self._to(v)
        self._w(f"#{v.num} {text}")
        self.current = None

    def on_start(self, v):
        self._to(v)
        self.stream.flush()

    def on_log(self, v, line):
        self._to(v)
        self._w(f"#{v.num} {log_time(time.monotonic() - v.started)} {line}")

    def on_status(self, v, text, seconds):
        self._to(v)
        self._w(f"#{v.num} {text}{f' {seconds:.1f}s' if seconds > 0.01 else ''} done")

    def on_cached(self, v):
        self._end(v, "CACHED")

    def on_explain(self, v, text, reason):
        if text is not None:
            self._to(v)
            self._w(f"#{v.num} cache miss: {text}")

    def on_done(self, v):
        self._end(v, f"DONE {v.elapsed:.1f}s")

    def on_error(self, v):
        self._end(v, f"ERROR: {v.error}")

    def on_canceled(self, v):
        self._end(v, "CANCELED")


class JsonProgress(Progress):
    """One JSON object per line: {"vertex", "name", "status", "time", "line"?}; a step that
    missed the cache has a "cache-miss" object with its "reason" (builder.explain); a finished
    sub-task of a vertex (`writing image ...`) is a "progress" object with its "line"."""

    def _emit(self, v: Vertex, status: str, **extra) -> None:
        rec = {"vertex": v.num, "name": v.name, "status": status,
               "time": round(time.monotonic() - self.t0, 3), **extra}
        self.stream.write(json.dumps(rec) + "\n")
        self.stream.flush()

    def on_start(self, v):
        self._emit(v, "started")

    def on_log(self, v, line):
        self._emit(v, "log", line=line)

    def on_status(self, v, text, seconds):
        self._emit(v, "progress", line=text, duration=round(seconds, 3))

    def on_cached(self, v):
        self._emit(v, "cached")

    def on_explain(self, v, text, reason):
        self._emit(v, "cache-miss", reason=reason, **({"line": text} if text else {}))

    def on_done(self, v):
        self._emit(v, "done", duration=round(v.elapsed, 3))

    def on_error(self, v):
        self._emit(v, "error", error=v.error)

    def on_canceled(self, v):
        self._emit(v, "canceled")


# -- the terminal view ------------------------------------------------------------------------
_NAMED = {"black": 30, "red": 31, "green": 32, "yellow": 33, "blue": 34, "magenta": 35,
          "cyan": 36, "white": 37, "default": 39}


def _color(value: str) -> str | None:
    """A BUILDKIT_COLORS value: a colour name (light-NAME too) or `r,g,b` (the 256-colour
    cube's nearest), as an SGR sequence; None when it is neither."""
    v = value.strip().lower()
    light = v.startswith("light-")
    code = _NAMED.get(v[6:] if light else v)
    if code is not None:
        return f"\x1b[{code + 60 if light and code != 39 else code}m"
    parts = v.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        r, g, b = (int(p) * 6 // 256 for p in parts)
        return f"\x1b[38;5;{16 + 36 * r + 6 * g + b}m"
    return None


def colors(env=os.environ) -> dict[str, str]:
    """SGR sequences per role: run (finished steps), error, cancel, log. Empty strings with
    NO_COLOR set to anything (no-color.org, as BuildKit); BUILDKIT_COLORS overrides roles
    (`run=green:error=yellow:cancel=255,0,255`)."""
    if env.get("NO_COLOR"):
        return {"run": "", "error": "", "cancel": "", "log": "", "reset": ""}
    out = {"run": "\x1b[34m", "error": "\x1b[31m", "cancel": "\x1b[33m", "log": "\x1b[2m",
           "reset": "\x1b[0m"}
    for field in env.get("BUILDKIT_COLORS", "").split(":"):
        key, eq, value = field.partition("=")
        sgr = _color(value) if eq else None
        if sgr is not None and key.strip().lower() in ("run", "error", "cancel"):
            out[key.strip().lower()] = sgr
    return out


def _log_rows(v: Vertex, width: int) -> list[str]:
    """The last TERM_ROWS rows of the step's output as a terminal `width` wide shows them
    (long lines wrap, a carriage return starts the line again)."""
    rows: list[str] = []
    for line in reversed(v.tail):
        line = line.rpartition("\r")[2].replace("\t", "    ")
        chunks = [line[i:i + width] for i in range(0, len(line), width)] or [""]
        rows[:0] = chunks
        if len(rows) >= TERM_ROWS:
            break
    rows = [r for r in rows[-TERM_ROWS:] if r.strip()]
    return [r.ljust(width) for r in rows]


def frame(p: Progress, width: int, height: int, final: bool, sgr: dict[str, str]) -> list[str]:
    """The terminal view's lines, BuildKit's layout: `[+] Building 1.2s (N/M) FINISHED`, then
    ` => name ... 0.3s` per started vertex (CACHED, ERROR or CANCELED in front) and its
    ` => => status` rows, each fitted to `width - 1` columns; the log rows (` => => # ...`) of
    the busiest running steps while there is room. `final`: every line, no logs."""
    now = time.monotonic()
    done = sum(1 for v in p.vertices if v.finished is not None)
    total = len(p.vertices) if final and all(v.error is None and not v.canceled
                                             for v in p.vertices) else max(p.expected, len(p.vertices))
    state = " FINISHED" if final and done and done == total else ""
    head = f"[+] Building {now - p.t0:.1f}s ({done}/{total}){state}"
    jobs = []   # (name, start, end, vertex or None, colour role)
    for v in p.vertices:
        name = v.name.replace("\t", " ")
        role = "run"
        if v.canceled:
            name, role = "CANCELED " + name, "cancel"
        elif v.error is not None:
            name, role = "ERROR " + name, "error"
        if v.cached:
            name = "CACHED " + name
        jobs.append((name, v.started, v.finished, v, role))
        jobs.extend(("=> " + text, s, e, None, "run") for text, s, e in v.statuses)
    shown: set[int] = set()
    if not final:
        running = [j for j in jobs if j[2] is None]
        free = height - 2 - len(running)
        hide = 0
        for j in sorted((j for j in running if j[3] is not None and j[3].logged),
                        key=lambda j: -j[3].logged):
            if free <= TERM_ROWS + 3:
                break
            shown.add(id(j))
            hide += len(_log_rows(j[3], width - TERM_PAD))
            free -= TERM_ROWS + 3
        limit = height - 2 - hide
        if len(jobs) > limit:   # the newest lines, and every running one that would be cut
            cut, kept = jobs[:len(jobs) - limit], jobs[len(jobs) - limit:]
            hidden = [j for j in cut if j[2] is None]
            if hidden:
                free_slots = [i for i, j in enumerate(kept) if j[2] is not None][:len(hidden)]
                kept = hidden[len(hidden) - len(free_slots):] + [j for i, j in enumerate(kept)
                                                                  if i not in set(free_slots)]
            jobs = kept if limit > 0 else []
    out = [head.ljust(width - 1)[:width - 1]]
    for job in jobs:
        name, start, end, v, role = job
        dt = (end if end is not None else now) - start
        timer = f" {dt if dt >= 0.05 else 0:3.1f}s"
        left = width - 4 - len(timer) - 2
        if left < 12:   # too narrow a terminal to show the line at all
            continue
        line = (" => " + name[:left]).ljust(width - len(timer) - 2) + " " + timer
        out.append(f"{sgr[role]}{line}{sgr['reset']}" if end is not None and sgr[role] else line)
        if id(job) in shown:
            out.extend(f"{sgr['log']} => => # {row}{sgr['reset']}" if sgr["log"] else f" => => # {row}"
                       for row in _log_rows(v, width - TERM_PAD))
    return out


def terminal_size(stream) -> tuple[int, int]:
    """(columns, rows) of the terminal behind `stream`; BuildKit's 80x10 when it has none."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    except (OSError, ValueError, AttributeError):
        pass
    return 80, 10


class TtyProgress(Progress):
    """BuildKit's terminal view: the frame (see `frame`) redrawn in place every 100 ms, the
    last frame whole when the build ends. `live=False` (a replayed build, where nothing runs):
    the last frame only."""

    def __init__(self, stream=None, *, live: bool = True):
        super().__init__(stream)
        self.sgr = colors()
        self.drawn = 0          # lines of the frame on the screen now
        self.closed = threading.Event()
        self.ticker = None
        if live:
            self.ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self.ticker.start()

    def _tick(self) -> None:
        while not self.closed.wait(0.1):
            self._draw(final=False)

    def _draw(self, final: bool) -> None:
        with self.lock:
            width, height = terminal_size(self.stream)
            lines = frame(self, width, height, final, self.sgr)
            out = ["\x1b[?25l"]     # no cursor flicker while the frame is rewritten
            if self.drawn:
                out.append(f"\x1b[{self.drawn}A")
            out.append("\r")
            out.extend(line + "\n" for line in lines)
            if self.drawn > len(lines):     # blank what the longer frame before left below
                extra = self.drawn - len(lines)
                out.append((" " * (width - 1) + "\n") * extra + f"\x1b[{extra}A")
            out.append("\x1b[?25h")
            self.drawn = len(lines)
            try:
                self.stream.write("".join(out))
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def close(self):
        if self.closed.is_set():
            return
        self.closed.set()
        if self.ticker is not None:
            self.ticker.join()
        self._draw(final=True)


def make_progress(mode: str, stream=None, *, live: bool = True) -> Progress:
    """`auto` and `tty` -> the terminal view when `stream` is a terminal, else plain lines (as
    docker's CLI does for `--progress tty` into a pipe); `plain`, `json` forced.
    `live=False`: the terminal view's final frame only (nothing will run)."""
    stream = stream or sys.stderr
    if mode in ("auto", "tty"):
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream, live=live)
    if mode == "json":
        return JsonProgress(stream)
    return PlainProgress(stream)


# -- the vertices BuildKit shows around the steps (a full build and a replay alike) -------------
CONTEXT = "[internal] load build context"


def loaded(p: Progress, dockerfile: str, dockerfile_bytes: int, ignore_bytes: int) -> None:
    """BuildKit's first two vertices: the Dockerfile and the .dockerignore read."""
    v = p.start(f"[internal] load build definition from {dockerfile}", once=True)
    p.status(v, f"transferring dockerfile: {size_text(dockerfile_bytes)}")
    p.done(v)
    v = p.start("[internal] load .dockerignore", once=True)
    p.status(v, f"transferring context: {size_text(ignore_bytes)}")
    p.done(v)


def context_read(p: Progress, v: Vertex, nbytes: int) -> None:
    """The build context vertex ends: `nbytes` of files read from it."""
    p.status(v, f"transferring context: {size_text(nbytes)}", v.started)
    p.done(v)


def exported(p: Progress, v: Vertex, image_id: str, tags: list[str]) -> None:
    """`exporting to image` ends: the image written, each -t name given."""
    from cache.refs import display

    p.status(v, f"writing image {image_id}")
    for t in tags:
        p.status(v, f"naming to {display(t, default_tag=False)}")
    p.done(v)
