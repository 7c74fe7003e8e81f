"""Progress of a pull or push, from the events cache.registry reports (docker's JSON message
shape: {"status", "id"?, "progressDetail"?: {"current", "total"}}).

A terminal gets a live bar per layer with its size and speed (rich, imported only here); a pipe
gets docker's plain lines, one per change of a layer's status; `json` gets every event as a JSON
line (byte progress at most every 1 MiB per layer); `quiet` prints nothing.
"""
from __future__ import annotations

import json
import re
import sys
import threading

_BYTES = ("Downloading", "Pushing")
_FINISHED = ("Pull complete", "Download complete", "Pushed", "Already exists", "Layer already exists")
_LAYER_ID = re.compile(r"[0-9a-f]{12}")


class TransferView:
    def __init__(self, mode: str = "auto", stream=None, *, quiet: bool = False):
        self.stream = stream or sys.stderr
        if quiet:
            mode = "quiet"
        elif mode == "auto":
            mode = "tty" if self.stream.isatty() else "plain"
        self.mode = mode
        self.lock = threading.Lock()
        self.last: dict[str, str] = {}
        self.bars = None
        if mode == "tty":
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
            self.bars = Progress(TextColumn("{task.fields[sid]}"), TextColumn("{task.description}"),
                                 BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                 console=Console(file=self.stream, highlight=False),
                                 transient=False)
            self.tasks: dict[str, int] = {}
            self.bars.start()

    def __call__(self, event: dict) -> None:
        with self.lock:
            getattr(self, "_" + self.mode)(event)

    def _quiet(self, event: dict) -> None:
        pass

    def _json(self, event: dict) -> None:
        self.stream.write(json.dumps(event) + "\n")
        self.stream.flush()

    def _plain(self, event: dict) -> None:
        status, sid = event.get("status", ""), event.get("id")
        if status in _BYTES:
            return
        if sid is not None and sid != "manifest":
            if self.last.get(sid) == status:
                return
            self.last[sid] = status
            if status in ("Waiting", "Preparing"):
                return
            self.stream.write(f"{sid}: {status}\n")
        else:
            self.stream.write(f"{sid}: {status}\n" if sid else f"{status}\n")
        self.stream.flush()

    def _tty(self, event: dict) -> None:
        status, sid = event.get("status", ""), event.get("id")
        detail = event.get("progressDetail") or {}
        if not sid or not _LAYER_ID.fullmatch(sid):  # a message, not a layer
            if sid != "manifest":
                self.bars.console.print(f"{sid}: {status}" if sid else status)
            return
        if sid not in self.tasks:
            self.tasks[sid] = self.bars.add_task(status, sid=sid, total=detail.get("total"))
        task = self.tasks[sid]
        kw = {"description": status}
        if "current" in detail:
            kw["completed"] = detail["current"]
            if detail.get("total"):
                kw["total"] = detail["total"]
        elif status in _FINISHED or status.startswith("Mounted from"):
            total = self.bars.tasks[task].total if task < len(self.bars.tasks) else None
            if total:
                kw["completed"] = total
        self.bars.update(task, **kw)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None
