"""HEALTHCHECK for a detached container, as docker's daemon/health.go runs it, without a daemon:
the container's supervisor probes it and records docker's State.Health in state.json.

`merge` lays run's --health-* flags over the image's Healthcheck (docker's rules: a flag left
unset takes the image's value); `Checker` is the supervisor's side. The first probe runs one
Interval after the start, then one every Interval (every StartInterval instead while starting
inside StartPeriod, when one is set); a probe is the Test command run inside the
container (runtime.containers.exec.run in a forked child, its own process group so a probe over
its Timeout is killed with everything it started) with the container's env, user and workdir;
its output (first 4096 bytes) and exit code go to the last 5 entries of Health.Log. Exit 0 makes
it healthy and resets FailingStreak; a failure (or a timeout, ExitCode -1) adds to FailingStreak
(not while `starting` inside StartPeriod), and Retries failures in a row make it unhealthy.
Imported by the supervisor only when the container has a healthcheck (the idle one stays lean);
the exec machinery is imported in the probe's child only.
"""
from __future__ import annotations

import os
import signal
import time

SECOND = 10**9
DEFAULTS = {"Interval": 30 * SECOND, "Timeout": 30 * SECOND, "StartPeriod": 0, "Retries": 3}
MAX_LOG = 5
MAX_OUTPUT = 4096


def merge(image: dict | None, flags: dict | None) -> dict | None:
    """The container's Config.Healthcheck: flags (None when no --health-* flag was given) over
    the image's; None when neither has one."""
    if not flags:
        return dict(image) if image else None
    out = dict(flags)
    if image:
        if not out.get("Test"):
            out["Test"] = image.get("Test") or []
        for k in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
            if not out.get(k) and image.get(k):
                out[k] = image[k]
    return {k: v for k, v in out.items() if v or k == "Test"}


def probe_argv(hc: dict | None) -> list[str] | None:
    """The probe's argv, None when there is none to run (no Test, NONE)."""
    test = list((hc or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return test[1:] or None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]] if len(test) > 1 and test[1] else None
    return None


def status_suffix(health: dict | None) -> str:
    """What `docker ps` adds to "Up ...": " (healthy)", " (health: starting)", " (unhealthy)"."""
    s = (health or {}).get("Status")
    if s == "starting":
        return " (health: starting)"
    return f" ({s})" if s in ("healthy", "unhealthy") else ""


def _go_duration(ns: int) -> str:
    """Go's Duration.String for the values a timeout has (1s, 500ms, 1m30s, 2.5s)."""
    if ns < SECOND:
        return f"{ns // 10**6}ms" if ns % 10**6 == 0 else f"{ns / 10**6:g}ms"
    m, s = divmod(ns, 60 * SECOND)
    h, m = divmod(m, 60)
    sec = f"{s / SECOND:.9f}".rstrip("0").rstrip(".") + "s"
    return (f"{h}h{m}m" if h else f"{m}m" if m else "") + sec


class Checker:
    """The supervisor's prober: `due()` says how long poll may sleep, `fds()` what to watch,
    `on_event(fd)` and `tick()` drive it; results are written into the container's state."""

    def __init__(self, c, now, parse_time):
        hc = c.config.get("healthcheck") or {}
        self.c, self.now, self.parse_time = c, now, parse_time
        self.argv = probe_argv(hc)
        get = lambda k: hc.get(k) or DEFAULTS[k]          # noqa: E731 - docker's timeoutWithDefault
        self.interval, self.timeout = get("Interval") / SECOND, get("Timeout") / SECOND
        self.start_period, self.retries = get("StartPeriod") / SECOND, get("Retries")
        # docker 25: inside StartPeriod, while still starting, probes come every StartInterval
        self.start_interval = (hc.get("StartInterval") or 0) / SECOND
        self.timeout_text = _go_duration(get("Timeout"))
        self.next = time.monotonic() + self._interval()
        self.child = None     # (pid, pidfd, outfd, started RFC3339, deadline)
        self.output = b""

    def due(self) -> float:
        """Seconds until tick() has work."""
        at = self.child[4] if self.child else self.next
        return max(0.0, at - time.monotonic())

    def fds(self) -> tuple:
        """The probe's pidfd and, until its EOF, its output pipe (a pipe at EOF left in the
        poll would report POLLHUP at once, for ever: a supervisor spinning at 100% CPU)."""
        return tuple(fd for fd in self.child[1:3] if fd is not None) if self.child else ()

    def tick(self) -> int | None:
        """Start a probe that is due (returns fds to watch), or end one over its timeout."""
        if self.child is None:
            if time.monotonic() >= self.next:
                self._start()
                return self.fds() or None
        elif time.monotonic() >= self.child[4]:
            pid = self.child[0]
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._finish(-1, f"Health check exceeded timeout ({self.timeout_text})")
        return None

    def on_event(self, fd: int) -> bool:
        """Handle a readable fd of the probe; False when it is not the probe's."""
        if not self.child or fd not in self.fds():
            return False
        pid, pidfd, outfd = self.child[:3]
        if fd == outfd:
            self._read()
            return True
        _, status = os.waitpid(pid, 0)
        if outfd is not None:
            self._read()
        code = os.waitstatus_to_exitcode(status)
        self._finish(code if code >= 0 else 128 - code, None)
        return True

    def _read(self) -> None:
        try:
            while True:
                data = os.read(self.child[2], 65536)
                if not data:        # EOF (the probe closed its output): out of the poll
                    os.close(self.child[2])
                    self.child = self.child[:2] + (None,) + self.child[3:]
                    return
                if len(self.output) < MAX_OUTPUT:
                    self.output = (self.output + data)[:MAX_OUTPUT]
        except BlockingIOError:
            return

    def _start(self) -> None:
        """Fork a probe; when that cannot be done (EMFILE, EAGAIN, ENOMEM) the probe is
        recorded as failed with the error as its output, and the monitor goes on."""
        started = self.now()
        r = w = pid = None
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(r, False)
            pid = os.fork()
            if pid == 0:
                _probe(self.c, self.argv, w)        # never returns
            os.close(w)
            w = None
            try:
                os.setpgid(pid, pid)    # here too, so a kill at once still finds the group
            except OSError:
                pass
            self.child = (pid, os.pidfd_open(pid), r, started, time.monotonic() + self.timeout)
        except OSError as e:
            for fd in (r, w):
                if fd is not None:
                    os.close(fd)
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                os.waitpid(pid, 0)
            self.child = None
            self.record(started, 1, f"cannot start the health check: {e}")
            self.next = time.monotonic() + self._interval()
            return
        self.output = b""

    def _finish(self, code: int, output: str | None) -> None:
        pid, pidfd, outfd, started, _ = self.child
        if code == -1:
            os.waitpid(pid, 0)
        for fd in (pidfd, outfd):
            if fd is not None:
                os.close(fd)
        self.child = None
        self.record(started, code, output if output is not None
                    else self.output.decode(errors="replace"))
        self.next = time.monotonic() + self._interval()

    def _interval(self) -> float:
        st = self.c.state
        if self.start_interval and (st.get("health") or {}).get("Status") == "starting":
            try:
                since = time.time() - self.parse_time(st["started"])
            except (KeyError, ValueError):
                since = 0.0
            if since < self.start_period:
                return self.start_interval
        return self.interval

    def record(self, started: str, code: int, output: str) -> None:
        """docker's handleProbeResult on the state's Health."""
        st = self.c.state
        h = dict(st.get("health") or {"Status": "starting", "FailingStreak": 0, "Log": []})
        log = list(h.get("Log") or [])[-(MAX_LOG - 1):]
        log.append({"Start": started, "End": self.now(), "ExitCode": code, "Output": output})
        h["Log"] = log
        if code == 0:
            h["FailingStreak"], h["Status"] = 0, "healthy"
        else:
            in_start = h.get("Status") == "starting" and \
                self.parse_time(started) - self.parse_time(st["started"]) < self.start_period
            if not in_start:
                h["FailingStreak"] = h.get("FailingStreak", 0) + 1
                if h["FailingStreak"] >= self.retries:
                    h["Status"] = "unhealthy"
        self.c.write_state(health=h)

    def close(self) -> None:
        """The container ended: a probe still running goes."""
        if self.child:
            try:
                os.killpg(self.child[0], signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.child[0], 0)
            for fd in self.fds():
                os.close(fd)
            self.child = None


def _probe(c, argv: list[str], w: int) -> None:
    """The probe's child: its own process group, stdout and stderr into the pipe, the command
    run in the container (exec's rules); exits with its status."""
    code = 1
    try:
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(w, 1)
        os.dup2(w, 2)
        from runtime.containers import exec as cexec
        from runtime.containers.inspect import init_pid

        # nothing of the supervisor's (pty master, log, lock, attach socket, proxy listeners)
        # goes with the probe towards the container
        cexec.close_except(())

        pid1 = init_pid(c)
        if not pid1:
            raise OSError("the container is not running")
        cfg = c.config
        from runtime import caps
        capmask = caps.mask(cfg.get("cap_add") or [], cfg.get("cap_drop") or [],
                            bool(cfg.get("privileged")))     # the container's, as docker's probe
        code = cexec.run(pid1, argv, list(cfg.get("env") or []), cfg.get("cwd") or "/",
                         cfg.get("user") or "", security_opt=cfg.get("security_opt"),
                         privileged=bool(cfg.get("privileged")), capmask=capmask,
                         ulimits=cfg.get("ulimits"))
    except BaseException as e:  # noqa: BLE001 - the probe's output says why
        try:
            os.write(2, f"{e}\n".encode())
        except OSError:
            pass
    os._exit(code)
