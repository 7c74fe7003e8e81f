#!/usr/bin/env python3
"""Issue 11's throughput check: container to container on one user network, next to the host's
loopback, with the same tools at both ends (busybox httpd serving a file from a tmpfs, busybox
wget reading it to /dev/null), timed inside the client container (/proc/uptime, 10 ms steps).

    sudo /work/main/.venv/bin/python bench/network_bench.py [-n 5] [--mb 1024]

Rows: `user network` (server and client on `pybuild network create`'s bridge, by name),
`default bridge` (the client reaches the server's address on pybuild0) and `host loopback`
(both `--network host`, 127.0.0.1). Everything it makes (containers, the network, the store
root) goes at the end, Ctrl-C too.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))     # busybox_fixture
sys.path.insert(0, str(REPO))

from busybox_fixture import make_busybox_store  # noqa: E402

SERVE = ("mkdir -p /www && dd if=/dev/zero of=/www/f bs=1M count={mb} 2>/dev/null && "
         "touch /www/ready && exec httpd -f -p {port} -h /www")
# busybox date has no %N: /proc/uptime's centiseconds, around a transfer of hundreds of MB
FETCH = ("read s _ < /proc/uptime; wget -q -O /dev/null http://{host}:{port}/f; "
         "read e _ < /proc/uptime; echo $s $e")


def pb(env, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=check, timeout=300)


def serve(env, name: str, network: str, port: int, mb: int) -> str:
    cid = pb(env, "run", "-d", "--name", name, "--network", network, "--tmpfs", "/www:size=2g",
             "busybox", "sh", "-c", SERVE.format(mb=mb, port=port)).stdout.strip()
    end = time.monotonic() + 60
    while pb(env, "exec", cid, "test", "-e", "/www/ready", check=False).returncode != 0:
        if time.monotonic() > end:
            raise SystemExit(f"the {name} server did not come up")
        time.sleep(0.1)
    return cid


def fetch_us(env, network: str, host: str, port: int) -> int:
    r = pb(env, "run", "--rm", "--network", network, "busybox", "sh", "-c",
           FETCH.format(host=host, port=port))
    start, end = (float(x) for x in r.stdout.split()[-2:])
    return max(1, round((end - start) * 1e6))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5, help="fetches per row (default 5)")
    ap.add_argument("--mb", type=int, default=1024, help="size of the file served (default 1024)")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pb-netbench-"))
    env = dict(os.environ, PYBUILD_ROOT=str(base / "root"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    made: list[str] = []
    try:
        make_busybox_store(base / "root")
        pb(env, "network", "create", "pbbench")
        made.append("net")
        user = serve(env, "srv-user", "pbbench", 8080, a.mb)
        made.append(user)
        bridge = serve(env, "srv-bridge", "bridge", 8080, a.mb)
        made.append(bridge)
        bridge_ip = pb(env, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", bridge).stdout.strip()
        host = serve(env, "srv-host", "host", 18765, a.mb)
        made.append(host)
        rows = {"user network (by name)": ("pbbench", "srv-user", 8080),
                "default bridge (by address)": ("bridge", bridge_ip, 8080),
                "host loopback (--network host)": ("host", "127.0.0.1", 18765)}
        times: dict[str, list[int]] = {k: [] for k in rows}
        for _ in range(a.n):            # interleaved, so drift hits every row alike
            for k, (net, h, port) in rows.items():
                times[k].append(fetch_us(env, net, h, port))
        print(f"{a.mb} MiB fetched with busybox wget from busybox httpd, {a.n} runs per row, "
              f"interleaved; {os.cpu_count()} cores, {os.uname().release}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
        print("| path | median MB/s | min | max |\n|---|---|---|---|")
        for k, xs in times.items():
            rates = sorted(a.mb * 1.048576 / (us / 1e6) for us in xs)
            print(f"| {k} | {statistics.median(rates):.0f} | {rates[0]:.0f} | {rates[-1]:.0f} |")
    finally:
        for cid in made:
            if cid != "net":
                pb(env, "rm", "-f", cid, check=False)
        if "net" in made:
            pb(env, "network", "rm", "pbbench", check=False)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
