"""Build progress: plain lines like BuildKit's `--progress=plain`, JSON lines, or a live rich view.

The solver reports events (start, log, cached, done, error) per vertex; a printer renders them.
`auto` picks the live view only when stderr is a terminal, so CI logs stay plain. rich is
imported only by the live view.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque

TAIL_LINES = 10


class Vertex:
    """One line of progress: a step or an internal action such as loading the context."""

    def __init__(self, num: int, name: str):
        self.num = num
        self.name = name
        self.started = time.monotonic()
        self.finished: float | None = None
        self.cached = False
        self.step = False  # a layer step (a replay of the build shows it CACHED)
        self.once = False  # work the next identical build does not do again (a pull)
        self.error: str | None = None
        self.canceled = False  # the build was interrupted while it ran
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
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

    def start(self, name: str) -> Vertex:
        with self.lock:
            v = Vertex(len(self.vertices) + 1, name)
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
                self.on_log(v, line)

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
            self.on_log(v, line)

    # hooks
    def on_start(self, v: Vertex) -> None: ...
    def on_log(self, v: Vertex, line: str) -> None: ...
    def on_cached(self, v: Vertex) -> None: ...
    def on_explain(self, v: Vertex, text: str, reason: dict) -> None: ...
    def on_done(self, v: Vertex) -> None: ...
    def on_error(self, v: Vertex) -> None: ...
    def on_canceled(self, v: Vertex) -> None: ...


class PlainProgress(Progress):
    """BuildKit's plain format: `#N name`, `#N 0.123 output`, `#N CACHED`, `#N DONE 0.2s`."""

    def _w(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_start(self, v):
        self._w(f"#{v.num} {v.name}")

    def on_log(self, v, line):
        self._w(f"#{v.num} {v.elapsed:.3f} {line}")

    def on_cached(self, v):
        self._w(f"#{v.num} CACHED")

    def on_explain(self, v, text, reason):
        if text is not None:
            self._w(f"#{v.num} cache miss: {text}")

    def on_done(self, v):
        self._w(f"#{v.num} DONE {v.elapsed:.1f}s")

    def on_error(self, v):
        self._w(f"#{v.num} ERROR: {v.error}")

    def on_canceled(self, v):
        self._w(f"#{v.num} CANCELED")


class JsonProgress(Progress):
    """One JSON object per line: {"vertex", "name", "status", "time", "line"?}; a step that
    missed the cache has a "cache-miss" object with its "reason" (builder.explain)."""

    def _emit(self, v: Vertex, status: str, **extra) -> None:
        rec = {"vertex": v.num, "name": v.name, "status": status,
               "time": round(time.monotonic() - self.t0, 3), **extra}
        self.stream.write(json.dumps(rec) + "\n")
        self.stream.flush()

    def on_start(self, v):
        self._emit(v, "started")

    def on_log(self, v, line):
        self._emit(v, "log", line=line)

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


def _frame(p: Progress) -> list[tuple[str, str]]:
    """The live view's lines as (text, style): one per step, the tail of a running one."""
    out = [(f"[+] Building {time.monotonic() - p.t0:.1f}s", "bold blue")]
    for v in p.vertices:
        if v.cached:
            out.append((f" => CACHED {v.name}", "blue"))
            continue
        if v.canceled:
            out.append((f" => CANCELED {v.name}".ljust(60) + f" {v.elapsed:5.1f}s", "yellow"))
            continue
        style = "red" if v.error else ("blue" if v.finished else "")
        out.append((f" => {v.name}".ljust(60) + f" {v.elapsed:5.1f}s", style))
        if not v.finished or v.error:
            out.extend((f" => => {line}", "dim") for line in list(v.tail)[-6:])
    return out


class TtyProgress(Progress):
    """A live view like BuildKit's: one line per step with a timer, the tail of a running step."""

    def __init__(self, stream=None):
        super().__init__(stream)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.stream, highlight=False)
        self.live = Live(console=self.console, refresh_per_second=8, transient=False,
                         get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.text import Text

        with self.lock:
            out = Text()
            for text, style in _frame(self):
                out.append(text + "\n", style=style)
            return out

    def close(self):
        self.live.stop()


_ANSI = {"bold blue": "\x1b[1;34m", "blue": "\x1b[34m", "red": "\x1b[31m", "dim": "\x1b[2m"}


class FinalTtyProgress(Progress):
    """The live view's last frame only, printed at close with plain ANSI colours: for a
    replayed build, where nothing runs, so rich (~40 ms to import) is not worth loading."""

    def close(self):
        color = self.stream.isatty()  # as rich does: no escapes into a pipe or file
        self.stream.write("".join(f"{_ANSI[st]}{text}\x1b[0m\n" if st and color else text + "\n"
                                  for text, st in _frame(self)))
        self.stream.flush()


def make_progress(mode: str, stream=None, *, live: bool = True) -> Progress:
    """`auto` -> live view on a terminal, plain lines otherwise; `tty`, `plain`, `json` forced.
    `live=False`: the terminal view's final frame only (nothing will run)."""
    stream = stream or sys.stderr
    if mode == "auto":
        mode = "tty" if stream.isatty() else "plain"
    if mode == "tty":
        return TtyProgress(stream) if live else FinalTtyProgress(stream)
    if mode == "json":
        return JsonProgress(stream)
    return PlainProgress(stream)
