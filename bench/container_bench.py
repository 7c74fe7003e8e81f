#!/usr/bin/env python3
"""Issue 10's container bench: `pybuild run --rm busybox true` against `runc run` of a bundle of
the same layers and `docker run --rm` / `podman run --rm` of the same image (loaded from
`pybuild save`), with no network and with each tool's bridge; `run -d` until an HTTP GET of a
busybox httpd succeeds; the RSS of an idle supervisor (pybuild's, conmon, containerd-shim).

    sudo /work/main/.venv/bin/python bench/container_bench.py [-n 30] [--port-runs 10]
    sudo /work/main/.venv/bin/python bench/container_bench.py --profile   # where pybuild's time goes
    sudo ... bench/container_bench.py --repo DIR --no-docker --no-podman  # time another checkout

Everything it starts (a private dockerd on its own bridge, podman with private roots, runc
state, containers, bundles, bridges, CNI's iptables chains) is removed when it ends, Ctrl-C too.
Rows run interleaved (one run of each row per round) so that drift hits all tools alike.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))     # busybox_fixture, registry_fixture
sys.path.insert(0, str(REPO))               # the repo ahead of tests/

from busybox_fixture import make_busybox_store  # noqa: E402
from registry_fixture import die_with_parent, free_port, stop  # noqa: E402

DOCKERD, DOCKER = "/usr/sbin/dockerd", "/usr/bin/docker"   # docker.io's client matches its dockerd
DOCKER_BRIDGE, DOCKER_NET = "pbbench0", "10.213.77.1/24"     # a bridge of our own for dockerd
PODMAN_BRIDGE = "cni-podman0"                                # podman's default CNI network
HTTPD = "mkdir -p /www && echo ok >/www/index.html && exec httpd -f -p {port} -h /www"
DEVNULL = subprocess.DEVNULL


def q(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[len(xs) // 10], xs[-1 - len(xs) // 10]


def sh(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=check, **kw)


class Tools(contextlib.ExitStack):
    """The four tools, set up on one busybox image in `base`; unwound in reverse on exit."""

    def __init__(self, base: Path, pb_repo: Path = REPO):
        super().__init__()
        self.base = base
        self.pb_repo = pb_repo          # the checkout whose launcher is timed
        self.notes: list[str] = []

    # --- pybuild ---------------------------------------------------------------------------
    def setup_pybuild(self) -> None:
        self.root = self.base / "pybuild"
        make_busybox_store(self.root)
        self.pb_env = dict(os.environ, PYBUILD_ROOT=str(self.root))
        self.pb_env.pop("PYTHONDONTWRITEBYTECODE", None)    # a user's python caches bytecode
        self.callback(self._pybuild_cleanup)
        self.pb("images", check=True)
        self.image_tar = self.base / "busybox.tar"
        self.pb("save", "-o", self.image_tar, "busybox:latest", check=True)
        self.pb("save", "--format", "oci", "-o", self.base / "busybox-oci.tar", "busybox:latest",
                check=True)

    def pb(self, *args, check=False) -> subprocess.CompletedProcess:
        return sh(*self.pb_argv(*args), check=check, cwd=self.pb_repo, env=self.pb_env)

    def pb_argv(self, *args) -> list[str]:
        return [str(self.launcher()), *args]

    def launcher(self) -> Path:
        """pybuild as install.sh puts it on PATH (`python -I -S`, the checkout and the venv's
        packages on sys.path, its import index, no finalization), for the checkout timed; a
        checkout without builder/launcher.py (older) gets the plain launcher of its time."""
        import sysconfig

        path = self.base / "pybuild-launcher"
        if not path.exists():
            site = sysconfig.get_paths()["purelib"]
            if (self.pb_repo / "builder" / "launcher.py").exists():
                subprocess.run([sys.executable, "-m", "builder.launcher", str(path)],
                               cwd=self.pb_repo, check=True, stdout=DEVNULL)
            else:
                path.write_text(f"#!{sys.executable} -IS\nimport sys\n"
                                f"sys.path[:0] = [{str(self.pb_repo)!r}, {site!r}]\n"
                                "import builder.cli as c\ngetattr(c, 'exit_now', sys.exit)(c.main())\n")
                path.chmod(0o755)
        return path

    def _pybuild_cleanup(self) -> None:
        r = self.pb("ps", "-aq")
        ids = r.stdout.split()
        if ids:
            self.pb("rm", "-f", *ids)
        self.pb("network", "rm", "-f", "pbbench-net")

    # --- runc ------------------------------------------------------------------------------
    def setup_runc(self) -> None:
        """A bundle unpacked by umoci from the OCI archive pybuild saved; a second config.json
        without the network namespace (runc's "host" network) shares its rootfs."""
        oci = self.base / "oci"
        oci.mkdir()
        sh("tar", "-xf", self.base / "busybox-oci.tar", "-C", oci)
        index = json.loads((oci / "index.json").read_text())
        ref = (index["manifests"][0].get("annotations") or {}).get("org.opencontainers.image.ref.name")
        self.runc_root = self.base / "runc-state"
        self.callback(self._runc_cleanup)
        bundle = self.base / "bundle"
        r = sh("umoci", "unpack", "--image", f"{oci}:{ref or 'latest'}", bundle, check=False)
        if r.returncode != 0:       # the same layer dir, copied, with `runc spec`
            self.notes.append(f"umoci unpack failed ({r.stderr.strip()[:120]}); runc bundle = "
                              "a copy of pybuild's layer dir + `runc spec`")
            from cache.store import Store
            store = Store.open(self.root)
            (layer,) = store.image("busybox:latest").diff_ids       # the fixture has one layer
            bundle.mkdir(exist_ok=True)
            sh("cp", "-a", f"{store.layer_dir(layer)}/.", bundle / "rootfs")
            sh("runc", "spec", "--bundle", bundle)
        cfg = json.loads((bundle / "config.json").read_text())
        cfg["process"]["args"] = ["true"]
        cfg["process"]["terminal"] = False
        cfg["root"]["path"] = str(bundle / "rootfs")
        self.bundles = {}
        for net in ("none", "host"):
            d = self.base / f"bundle-{net}"
            d.mkdir()
            c = json.loads(json.dumps(cfg))
            if net == "host":
                c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
            (d / "config.json").write_text(json.dumps(c))
            self.bundles[net] = d
        self.runc_n = 0

    def runc_argv(self, net: str) -> list[str]:
        self.runc_n += 1
        return ["runc", "--root", str(self.runc_root), "run", "--bundle", str(self.bundles[net]),
                f"pbbench-{os.getpid()}-{self.runc_n}"]

    def _runc_cleanup(self) -> None:
        r = sh("runc", "--root", self.runc_root, "list", "-q", check=False)
        for cid in r.stdout.split():
            sh("runc", "--root", self.runc_root, "delete", "-f", cid, check=False)

    # --- docker ----------------------------------------------------------------------------
    def setup_docker(self) -> None:
        """A private dockerd (own socket, data and exec roots) on a bridge of our own with its
        userland proxy for -p; no iptables rules (they would outlive it)."""
        if not (os.path.exists(DOCKERD) and os.path.exists(DOCKER)):
            self.notes.append("docker: dockerd or /usr/bin/docker missing")
            self.docker = None
            return
        d = Path(tempfile.mkdtemp(prefix="pbb-", dir="/tmp"))     # short: unix socket path limit
        self.callback(shutil.rmtree, d, ignore_errors=True)
        self.callback(umount_under, d)
        bridge_args = ["--bridge=none"]
        if sh("ip", "link", "add", DOCKER_BRIDGE, "type", "bridge", check=False).returncode == 0:
            self.callback(sh, "ip", "link", "del", DOCKER_BRIDGE, check=False)
            sh("ip", "addr", "add", DOCKER_NET, "dev", DOCKER_BRIDGE)
            sh("ip", "link", "set", DOCKER_BRIDGE, "up")
            bridge_args = [f"--bridge={DOCKER_BRIDGE}"]
        else:
            self.notes.append("docker: no bridge could be made (ip link add ... type bridge failed): "
                              "its bridge network is not measured")
        sock = d / "d.sock"
        log = open(d / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
        proc = subprocess.Popen(
            [DOCKERD, "--data-root", str(d / "data"), "--exec-root", str(d / "exec"), "--pidfile",
             str(d / "d.pid"), "-H", f"unix://{sock}", "--iptables=false", "--ip-masq=false",
             *bridge_args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent)
        self.callback(log.close)
        self.callback(stop, proc, 30)
        self.docker = [DOCKER, "-H", f"unix://{sock}"]
        deadline = time.monotonic() + 60
        while sh(*self.docker, "version", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dockerd did not start: {(d / 'dockerd.log').read_text()[-500:]}")
            time.sleep(0.2)
        self.callback(lambda: sh(*self.docker, "container", "prune", "-f", check=False))
        self.callback(lambda: [sh(*self.docker, "rm", "-f", c, check=False) for c in
                               sh(*self.docker, "ps", "-aq", check=False).stdout.split()])
        sh(*self.docker, "load", "-i", self.image_tar)
        self.docker_bridge = bridge_args != ["--bridge=none"]

    # --- podman ----------------------------------------------------------------------------
    def setup_podman(self) -> None:
        """podman with its own storage, run and network-config dirs (CNI backend, its default
        `podman` network: bridge cni-podman0, 10.88.0.0/16)."""
        if not shutil.which("podman"):
            self.notes.append("podman: not installed")
            self.podman = None
            return
        d = self.base / "podman"
        self.podman = ["podman", "--root", str(d / "root"), "--runroot", str(d / "run"),
                       "--tmpdir", str(d / "tmp"), "--network-config-dir", str(d / "net"),
                       "--cgroup-manager", "cgroupfs", "--events-backend", "none",
                       "--storage-driver", "overlay"]
        had_bridge = Path(f"/sys/class/net/{PODMAN_BRIDGE}").exists()
        chains = _iptables_chains()
        self.callback(_drop_new_cni_chains, chains)
        if not had_bridge:
            self.callback(sh, "ip", "link", "del", PODMAN_BRIDGE, check=False)
        self.callback(umount_under, d)
        self.callback(lambda: sh(*self.podman, "rm", "-f", "-a", check=False))
        # podman's default nofile/nproc limits (1048576, 4194304) and even the host's own make
        # runc's setrlimit fail with EPERM here (no CAP_SYS_RESOURCE): lower ones
        self.prun = [*self.podman, "run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
        self.notes.append("podman runs with `--ulimit nofile=1024:1024 --ulimit nproc=4096:4096`: with "
                          "its defaults (or `--ulimit host`) runc's setrlimit fails with EPERM here")
        r = sh(*self.podman, "load", "-i", self.image_tar)
        m = re.search(r"Loaded image(?:\(s\))?: (\S+)", r.stdout + r.stderr)
        self.podman_image = m.group(1).split(",")[0] if m else "busybox:latest"

    # --- the rows --------------------------------------------------------------------------
    def true_rows(self) -> list[tuple[str, str, list[str]]]:
        """(tool, network, argv) of `run --rm busybox true` that can run here."""
        rows = [("pybuild", "none", self.pb_argv("run", "--rm", "--network", "none", "busybox", "true")),
                ("pybuild", "host", self.pb_argv("run", "--rm", "--network", "host", "busybox", "true"))]
        probe = self.pb("run", "--rm", "--network", "bridge", "busybox", "true")
        if probe.returncode == 0:
            rows.append(("pybuild", "bridge", self.pb_argv("run", "--rm", "--network", "bridge",
                                                           "busybox", "true")))
        else:
            self.notes.append(f"pybuild --network bridge: {probe.stderr.strip()}")
        made = self.pb("network", "create", "pbbench-net")     # issue 11: + <= 30 ms over none
        probe = self.pb("run", "--rm", "--network", "pbbench-net", "busybox", "true")
        if made.returncode == 0 and probe.returncode == 0:
            rows.append(("pybuild", "user network", self.pb_argv("run", "--rm", "--network",
                                                                 "pbbench-net", "busybox", "true")))
        else:
            self.notes.append(f"pybuild --network pbbench-net: {(made.stderr + probe.stderr).strip()}")
        rows += [("runc", "none (own netns)", self.runc_argv("none")), ("runc", "host", None)]
        if self.docker:
            rows.append(("docker", "none", [*self.docker, "run", "--rm", "--network", "none",
                                            "busybox", "true"]))
            if self.docker_bridge:
                rows.append(("docker", f"bridge ({DOCKER_BRIDGE})",
                             [*self.docker, "run", "--rm", "busybox", "true"]))
            rows.append(("docker", "host", [*self.docker, "run", "--rm", "--network", "host",
                                            "busybox", "true"]))
        if self.podman:
            img = self.podman_image
            rows.append(("podman", "none", [*self.prun, "--rm", "--network", "none", img, "true"]))
            probe = sh(*self.prun, "--rm", img, "true", check=False)
            if probe.returncode == 0:
                rows.append(("podman", "bridge (CNI podman)", [*self.prun, "--rm", img, "true"]))
            else:
                self.notes.append(f"podman default network: {probe.stderr.strip()[-300:]}")
            rows.append(("podman", "host", [*self.prun, "--rm", "--network", "host", img, "true"]))
        return rows


def umount_under(path: Path) -> None:
    """Lazily unmount every mount at or below path, deepest first (dockerd leaves an nsfs mount
    in its exec root, which `umount -R` of a directory that is no mount point does not reach)."""
    prefix = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4].encode().decode("unicode_escape") for ln in f]
    for m in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len,
                    reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True, check=False)


def _iptables_chains() -> set[tuple[str, str]]:
    out = set()
    for table in ("filter", "nat", "mangle"):
        r = sh("iptables", "-t", table, "-S", check=False)
        out |= {(table, ln.split()[1]) for ln in r.stdout.splitlines() if ln.startswith("-N ")}
    return out


def _drop_new_cni_chains(before: set[tuple[str, str]]) -> None:
    """CNI's bridge/portmap/firewall plugins delete a container's rules but leave their chains
    (and the jumps to them): remove the CNI-* chains this bench made."""
    new = {c for c in _iptables_chains() - before if c[1].startswith("CNI-")}
    for table in {t for t, _ in new}:
        names = {n for t, n in new if t == table}
        rules = sh("iptables", "-t", table, "-S", check=False).stdout.splitlines()
        for ln in rules:
            parts = shlex.split(ln)
            if parts[0] == "-A" and "-j" in parts and parts[parts.index("-j") + 1] in names:
                sh("iptables", "-t", table, "-D", *parts[1:], check=False)
        for n in names:
            sh("iptables", "-t", table, "-F", n, check=False)
        for n in names:
            sh("iptables", "-t", table, "-X", n, check=False)


def bench_true(tools: Tools, n: int) -> list[tuple[str, str, list[float], list[float]]]:
    """(tool, network, wall ms, CPU ms) per row; the CPU time (user + sys) is the command's own
    process tree as wait4 counts it: all of pybuild's and runc's work, only the client's for
    docker (dockerd, containerd, the shim and runc do the rest) and podman (conmon and runc are
    not its descendants). It is less sensitive than the wall time to other load."""
    rows = tools.true_rows()
    times: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(rows))}
    fails: dict[int, int] = {}
    err = tempfile.TemporaryFile()  # noqa: SIM115 - one for all runs, closed with the process
    for rnd in range(n + 2):                      # two warm-up rounds
        for i, (tool, net, argv) in enumerate(rows):
            if tool == "runc":
                argv = tools.runc_argv("none" if net.startswith("none") else "host")
            err.seek(0)
            err.truncate()
            t = time.perf_counter()
            p = subprocess.Popen(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=err, cwd=tools.pb_repo,
                                 env=tools.pb_env if tool == "pybuild" else None)
            _, status, ru = os.wait4(p.pid, 0)
            dt = (time.perf_counter() - t) * 1000
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:       # counted and said, not timed
                err.seek(0)
                fails[i] = fails.get(i, 0) + 1
                tools.notes.append(f"{tool} {net}: exit {p.returncode}: {err.read().decode().strip()[-300:]}")
                continue
            if rnd >= 2:
                times[i].append((dt, (ru.ru_utime + ru.ru_stime) * 1000))
    for i, k in fails.items():
        tools.notes.append(f"{rows[i][0]} {rows[i][1]}: {k} of {n + 2} runs failed (not timed)")
    return [(tool, net, [w for w, _ in times[i]], [c for _, c in times[i]])
            for i, (tool, net, _) in enumerate(rows) if times[i]]


def _get_ok(port: int, deadline: float) -> bool:
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=1) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return True
        except OSError:
            time.sleep(0.002)
    return False


def bench_port(tools: Tools, runs: int) -> list[tuple[str, str, list[float]]]:
    """Time from the start of `run -d` until GET /index.html returns 200 "ok"."""
    def variants():
        v = []
        pb = lambda *a: tools.pb_argv("run", "-d", *a)  # noqa: E731
        v.append(("pybuild", "host, httpd on PORT", lambda p: pb("--network", "host", "busybox", "sh",
                                                                 "-c", HTTPD.format(port=p)),
                  lambda cid: tools.pb("rm", "-f", cid)))
        v.append(("pybuild", "-p 127.0.0.1:PORT:80", lambda p: pb("-p", f"127.0.0.1:{p}:80", "busybox",
                                                                  "sh", "-c", HTTPD.format(port=80)),
                  lambda cid: tools.pb("rm", "-f", cid)))
        if tools.docker:
            d = tools.docker
            if tools.docker_bridge:
                v.append(("docker", "-p 127.0.0.1:PORT:80 (bridge + docker-proxy)",
                          lambda p: [*d, "run", "-d", "-p", f"127.0.0.1:{p}:80", "busybox", "sh", "-c",
                                     HTTPD.format(port=80)],
                          lambda cid: sh(*d, "rm", "-f", cid, check=False)))
            v.append(("docker", "host, httpd on PORT",
                      lambda p: [*d, "run", "-d", "--network", "host", "busybox", "sh", "-c",
                                 HTTPD.format(port=p)], lambda cid: sh(*d, "rm", "-f", cid, check=False)))
        if tools.podman:
            pm, img = tools.podman, tools.podman_image
            v.append(("podman", "-p 127.0.0.1:PORT:80 (CNI bridge + portmap)",
                      lambda p: [*tools.prun, "-d", "-p", f"127.0.0.1:{p}:80", img, "sh", "-c",
                                 HTTPD.format(port=80)], lambda cid: sh(*pm, "rm", "-f", cid, check=False)))
            v.append(("podman", "host, httpd on PORT",
                      lambda p: [*tools.prun, "-d", "--network", "host", img, "sh", "-c",
                                 HTTPD.format(port=p)], lambda cid: sh(*pm, "rm", "-f", cid, check=False)))
        return v

    rows = variants()
    times: dict[int, list[float]] = {i: [] for i in range(len(rows))}
    dead: set[int] = set()
    for rnd in range(runs + 1):
        for i, (tool, what, argv_of, rm) in enumerate(rows):
            if i in dead:
                continue
            port = free_port()
            env = tools.pb_env if tool == "pybuild" else None
            t = time.perf_counter()
            r = subprocess.run(argv_of(port), capture_output=True, text=True, cwd=tools.pb_repo, env=env,
                               check=False, stdin=DEVNULL)
            ok = r.returncode == 0 and _get_ok(port, time.perf_counter() + 20)
            dt = (time.perf_counter() - t) * 1000
            if r.returncode == 0:
                rm(r.stdout.strip().splitlines()[-1])
            if not ok:
                tools.notes.append(f"{tool} run -d {what}: " + (
                    f"exit {r.returncode}: {r.stderr.strip()[-200:]}" if r.returncode else
                    "no HTTP answer within 20 s"))
                dead.add(i)
                continue
            if rnd >= 1:
                times[i].append(dt)
    return [(tool, what, times[i]) for i, (tool, what, _, _) in enumerate(rows) if i not in dead]


def _mem(pid: int) -> tuple[float, float]:
    """(VmRSS, Pss) in MB of one process."""
    rss = pss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                rss = int(ln.split()[1]) / 1024
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
        for ln in f:
            if ln.startswith("Pss:"):
                pss = int(ln.split()[1]) / 1024
    return rss, pss


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return " ".join(a.decode(errors="replace") for a in f.read().split(b"\0")[:4] if a)[:70]


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def bench_rss(tools: Tools) -> list[tuple[str, int, float, float]]:
    """(what, pid, VmRSS MB, Pss MB) of the processes that hold an idle `sleep 1000` container."""
    out = []
    r = tools.pb("run", "-d", "busybox", "sleep", "1000", check=True)
    cid = r.stdout.strip().splitlines()[-1]
    time.sleep(2)                            # let the supervisor re-exec into its idle monitor
    state = json.loads(next(tools.root.glob(f"**/{cid}*/state.json")).read_text())
    keeper = int(state["pid"])
    sup = _ppid(keeper)
    out.append(("pybuild supervisor (idle monitor)", sup, *_mem(sup)))
    out.append(("pybuild keeper (fork of the supervisor)", keeper, *_mem(keeper)))
    with open(f"/proc/{keeper}/task/{keeper}/children") as f:
        init = int(f.read().split()[0])
    out.append(("pybuild pid 1 init (fork)", init, *_mem(init)))
    tools.pb("rm", "-f", cid)
    if tools.podman:
        cid = sh(*tools.prun, "-d", "--network", "none", tools.podman_image, "sleep",
                 "1000").stdout.strip()
        time.sleep(1)
        pid = int(sh(*tools.podman, "inspect", "-f", "{{.State.ConmonPid}}", cid).stdout)
        out.append(("podman: conmon", pid, *_mem(pid)))
        sh(*tools.podman, "rm", "-f", "-t", "0", cid, check=False)
    if tools.docker:
        cid = sh(*tools.docker, "run", "-d", "--network", "none", "busybox", "sleep", "1000").stdout.strip()
        time.sleep(1)
        pid = int(sh(*tools.docker, "inspect", "-f", "{{.State.Pid}}", cid).stdout)
        shim = _ppid(pid)
        out.append((f"docker: {_comm(shim).split()[0].rsplit('/', 1)[-1]}", shim, *_mem(shim)))
        sh(*tools.docker, "rm", "-f", cid, check=False)
    return out


def report(true_rows, port_rows, rss_rows, notes, n, port_runs, load0, repo) -> str:
    head = sh("git", "-C", repo, "rev-parse", "--short", "HEAD", check=False).stdout.strip()
    lines = [f"Machine: {os.cpu_count()} cores, {os.uname().release}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; pybuild from {repo} "
             f"({head or 'not a git checkout'}); 1-min load average {load0:.2f} at the start, "
             f"{os.getloadavg()[0]:.2f} at the end", "",
             f"`run --rm busybox true`, {n} runs per row, interleaved, wall time of the command (ms); "
             "CPU = user+sys of the command's own process tree (docker, podman: without their "
             "daemon/conmon/runc), median:", "",
             "| tool | network | median | p10 | p90 | CPU |", "|---|---|---|---|---|---|"]
    for tool, net, xs, cpu in true_rows:
        med, p10, p90 = q(xs)
        lines.append(f"| {tool} | {net} | {med:.1f} | {p10:.1f} | {p90:.1f} | "
                     f"{statistics.median(cpu):.0f} |")
    if port_rows:
        lines += ["", f"`run -d` of busybox httpd until a GET returns the file, {port_runs} runs (ms):", "",
                  "| tool | port | median | p10 | p90 |", "|---|---|---|---|---|"]
        for tool, what, xs in port_rows:
            med, p10, p90 = q(xs)
            lines.append(f"| {tool} | {what} | {med:.1f} | {p10:.1f} | {p90:.1f} |")
    if rss_rows:
        lines += ["", "Idle `sleep 1000` container, the processes that hold it:", "",
                  "| process | VmRSS MB | Pss MB |", "|---|---|---|"]
        for what, _pid, rss, pss in rss_rows:
            lines.append(f"| {what} | {rss:.1f} | {pss:.1f} |")
    if notes:
        lines += ["", "Notes:"] + [f"- {x}" for x in dict.fromkeys(notes)]
    return "\n".join(lines)


# --- profile ---------------------------------------------------------------------------------

PHASES = r'''
import sys, time
T = [("start", time.perf_counter())]
def mark(name): T.append((name, time.perf_counter()))
import builder.cli; mark("import builder.cli")
from builder.commands import run as R; mark("import builder.commands.run")
import cache.store, runtime.process, runtime.sandbox, runtime.rundir, runtime.mountns
import runtime.containers.config, runtime.containers.volumes, shutil
mark("import store + runtime modules")
def wrap(obj, name, label):
    f = getattr(obj, name)
    def w(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            T.append((label, t, time.perf_counter()))
    setattr(obj, name, w)
wrap(builder.cli, "make_parser", "make_parser")
wrap(runtime.mountns, "enter_private", "mount ns (enter_private)")
_open = cache.store.Store.open
def store_open(cls, *a, **k):
    t = time.perf_counter()
    s = _open(*a, **k)
    T.append(("Store.open", t, time.perf_counter()))
    return s
cache.store.Store.open = classmethod(store_open)
wrap(R, "_image", "image lookup")
wrap(cache.store.Store, "new_scratch", "new_scratch (upper/work dir)")
wrap(runtime.rundir.RunDir, "__init__", "RunDir (mount plan, overlay opts)")
wrap(runtime.process.os, "fork", "os.fork (keeper)")
wrap(runtime.process.ProcessTree, "wait", "wait (child: unshare, fork pid1, mounts, exec, true)")
wrap(runtime.process.ProcessTree, "_messages", "  of which: read child messages")
wrap(runtime.rundir.RunDir, "finish", "  of which: RunDir.finish")
_rmtree = shutil.rmtree
def rmtree(path, *a, **k):
    t = time.perf_counter()
    try:
        return _rmtree(path, *a, **k)
    finally:
        name = str(path).rsplit("/", 1)[-1].split("-")[0].lstrip(".")
        T.append((f"shutil.rmtree of {name}-*", t, time.perf_counter()))
shutil.rmtree = rmtree
_start = runtime.process.start
def start(spec):
    t = time.perf_counter()
    r = _start(spec)
    T.append(("process.start total", t, time.perf_counter()))
    return r
runtime.process.start = start; runtime.sandbox.process.start = start
t = time.perf_counter()
rc = builder.cli.main(sys.argv[1:])
T.append(("cli.main total", t, time.perf_counter()))
t0 = T[0][1]
for e in T[1:]:
    if len(e) == 2:
        print(f"P {e[0]}\t{(e[1]-t0)*1000:.2f}\t", file=sys.stderr)
    else:
        print(f"W {e[0]}\t{(e[1]-t0)*1000:.2f}\t{(e[2]-e[1])*1000:.2f}", file=sys.stderr)
sys.stderr.flush()
import os; os._exit(rc)
'''


def profile(tools: Tools, n: int) -> str:
    env = tools.pb_env
    argv = ["run", "--rm", "--network", "none", "busybox", "true"]
    out = ["### Profile of `pybuild run --rm --network none busybox true`", ""]
    # baseline: the interpreter alone
    bare = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, env=env)
        bare.append((time.perf_counter() - t) * 1000)
    bare_s = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-S", "-c", "pass"], check=True, env=env)
        bare_s.append((time.perf_counter() - t) * 1000)
    whole = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(tools.pb_argv(*argv), check=True, env=env, cwd=tools.pb_repo, stdout=DEVNULL)
        whole.append((time.perf_counter() - t) * 1000)
    out += [f"- whole command: median {q(whole)[0]:.1f} ms; `python -c pass` {q(bare)[0]:.1f} ms "
            f"(`-S`: {q(bare_s)[0]:.1f} ms) of it is the interpreter and site", ""]
    # -X importtime, median per module over n runs
    cum: dict[str, list[int]] = {}
    selft: dict[str, list[int]] = {}
    for _ in range(n):
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "builder", *argv], env=env,
                           cwd=tools.pb_repo, capture_output=True, text=True, check=True)
        for ln in r.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", ln)
            if m:
                name = ("  " * (len(m.group(3)) // 2 - 1)) + m.group(4)
                selft.setdefault(m.group(4), []).append(int(m.group(1)))
                if len(m.group(3)) <= 3:        # top level or one below
                    cum.setdefault(name, []).append(int(m.group(2)))
    total = sum(statistics.median(v) for v in selft.values()) / 1000
    out += [f"`-X importtime` (median of {n}; imports total {total:.1f} ms self time):", "",
            "| top-level import (and its direct children) | cumulative ms |", "|---|---|"]
    tops = sorted(cum.items(), key=lambda kv: -statistics.median(kv[1]))[:18]
    for name, v in tops:
        out.append(f"| `{name}` | {statistics.median(v) / 1000:.1f} |")
    out += ["", "| module (self time) | ms |", "|---|---|"]
    for name, v in sorted(selft.items(), key=lambda kv: -statistics.median(kv[1]))[:12]:
        out.append(f"| `{name}` | {statistics.median(v) / 1000:.1f} |")
    # phases, in-process timers around the CLI's own functions
    phases: dict[str, list[tuple[float, float]]] = {}
    for _ in range(n):
        r = subprocess.run([sys.executable, "-c", PHASES, *argv], env=env, cwd=tools.pb_repo,
                           capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"phase run failed: {r.stderr[-1000:]}")
        for ln in r.stderr.splitlines():
            if ln[:2] in ("P ", "W "):
                name, at, dur = ln[2:].split("\t")
                phases.setdefault(name, []).append((float(at), float(dur or 0)))
    out += ["", f"Phases (in-process timers around the CLI's functions, median of {n}; 'at' = ms "
            "since the interpreter ran the first line):", "", "| phase | at ms | took ms |", "|---|---|---|"]
    for name, v in phases.items():
        at = statistics.median(a for a, _ in v)
        dur = statistics.median(d for _, d in v)
        out.append(f"| {name} | {at:.1f} | {dur:.1f} |" if dur else f"| {name} | {at:.1f} | |")
    out += ["", _strace(tools, argv)]
    return "\n".join(out)


def _strace(tools: Tools, argv: list[str]) -> str:
    """Kernel-side timeline of one run (strace, seccomp-filtered: only these syscalls stop)."""
    if not shutil.which("strace"):
        return "(no strace: child-side timeline not measured)"
    log = tools.base / "strace.log"
    calls = "execve,unshare,clone,clone3,mount,pivot_root,umount2,wait4,exit_group"
    subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-o", str(log), "-e", f"trace={calls}",
                    *tools.pb_argv(*argv)], env=tools.pb_env, cwd=tools.pb_repo, stdout=DEVNULL,
                   stderr=DEVNULL, check=False)
    lines = log.read_text().splitlines()
    t0 = None
    out = ["Child-side timeline of one run (`strace -f --seccomp-bpf -ttt`; tracing adds a little "
           "to each listed call), ms since the CLI's execve:", "", "```"]
    for ln in lines:
        m = re.match(r"(\d+) +(\d+\.\d+) (.*)", ln)
        if not m:
            continue
        t = float(m.group(2))
        t0 = t0 or t
        text = m.group(3)
        if "resumed>" in text and "wait4" not in text:
            continue
        out.append(f"{(t - t0) * 1000:8.2f}  pid {m.group(1)}  {text[:110]}")
    out.append("```")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="runs per row of `run --rm true` (default 30)")
    ap.add_argument("--port-runs", type=int, default=10, help="runs per row of run -d + GET")
    ap.add_argument("--only", default="true,port,rss", help="comma list of: true, port, rss")
    ap.add_argument("--profile", action="store_true", help="profile pybuild's run instead")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="time `python -m builder` of this checkout (default: this one), e.g. an "
                         "export of another branch: git archive net | tar -x -C DIR")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, overlayfs, dockerd)")
    signal.signal(signal.SIGINT, signal.default_int_handler)    # even when started with it ignored
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    only = set(args.only.split(","))
    load0 = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="container-bench-"))
    try:
        with Tools(base, args.repo.resolve()) as tools:
            tools.setup_pybuild()
            if args.profile:
                print(profile(tools, args.n))
                return 0
            tools.setup_runc()
            if args.no_docker:
                tools.docker = None
            else:
                tools.setup_docker()
            if args.no_podman:
                tools.podman = None
            else:
                tools.setup_podman()
            true_rows = bench_true(tools, args.n) if "true" in only else []
            port_rows = bench_port(tools, args.port_runs) if "port" in only else []
            rss_rows = bench_rss(tools) if "rss" in only else []
            print(report(true_rows, port_rows, rss_rows, tools.notes, args.n, args.port_runs, load0,
                         args.repo))
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        return 130
    finally:
        umount_under(base)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
