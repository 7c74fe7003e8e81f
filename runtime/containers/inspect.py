"""What `docker inspect CONTAINER` shows, from a container's record: the keys users script
against in docker's shape and spelling (a never-started container's times are Go's zero time,
Pid is the container's pid 1 on the host while it runs, 0 otherwise)."""
from __future__ import annotations

import os

ZERO_TIME = "0001-01-01T00:00:00Z"


def init_pid(c) -> int:
    """The host pid of the container's pid 1 (the keeper's only child: the command, or the
    init with --init), 0 when not running. A pid the kernel gave to another process since the
    keeper was reaped (before "exited" is recorded) is not taken: the keeper's start time must
    be the one recorded, and its child must be in a pid namespace other than ours, or cp/exec
    would join the host's namespaces."""
    from cache.owner import start_time

    st = c.state
    keeper = st.get("pid")
    if c.status != "running" or not keeper:
        return 0
    try:
        with open(f"/proc/{keeper}/task/{keeper}/children") as f:
            kids = f.read().split()
        if not kids:
            return 0
        pid1 = int(kids[0])
        if os.readlink(f"/proc/{pid1}/ns/pid") == os.readlink("/proc/self/ns/pid"):
            return 0
    except (OSError, ValueError):
        return 0
    if st.get("pid_start") and start_time(keeper) != st["pid_start"]:
        return 0
    return pid1


def freezer(c) -> tuple[int, str] | None:
    """(cgroup version, dir) of a running container's own freezer cgroup (below
    cgroups.PARENT), else None: what `pause`, `unpause` and commit freeze."""
    pid = init_pid(c)
    if not pid:
        return None
    from runtime import cgroups

    try:
        ver, dirs = cgroups.of_pid(pid)
    except OSError:
        return None
    path = dirs.get("freezer")
    if not path or os.path.basename(os.path.dirname(path)) != cgroups.PARENT:
        return None
    return ver, path


def paused(c) -> bool:
    """docker's State.Paused: the container runs and its cgroup is frozen."""
    if c.status != "running":
        return False
    where = freezer(c)
    if where is None:
        return False
    from runtime import cgroups

    return cgroups.frozen(*where)


def _cmd(argv: list[str], entrypoint) -> list[str] | None:
    """Config.Cmd: argv after the entrypoint (docker keeps the two apart)."""
    ep = list(entrypoint or [])
    rest = argv[len(ep):] if argv[:len(ep)] == ep else argv
    return rest or None


def _port_bindings(cfg) -> dict:
    """HostConfig.PortBindings: the -p bindings as asked (not -P's, as docker)."""
    from runtime.network.ports import port_bindings

    return port_bindings([b for b in cfg.get("ports") or [] if b.get("given", True)])


def _mounts(c) -> list:
    from runtime.containers.volumes import inspect_mounts

    root = os.path.dirname(os.path.dirname(c.path))     # <root>/containers/<id>
    return inspect_mounts(root, c.config.get("mounts") or [])


def _network_settings(c) -> dict:
    """NetworkSettings: the bridge address while it runs (docker's empty strings otherwise);
    on user-defined networks one endpoint per network of the record (run --network's, then
    `network connect`ed ones: runtime.network.connect.live_endpoints), with its ID, --ip
    (IPAMConfig), aliases and the names peers resolve (DNSNames: name, aliases, short ID)."""
    from runtime.network.ports import inspect_ports, of_container

    cfg = c.config
    mode = cfg.get("network", "host")
    net = (c.state.get("network") or {}) if c.status == "running" else {}
    ip, gw, mac = net.get("ip", ""), net.get("gateway", ""), net.get("mac", "")
    prefix = net.get("prefix", 0)
    user = bool(cfg.get("network_id"))
    base = {"IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": mac,
            "NetworkID": "", "EndpointID": "", "Gateway": gw, "IPAddress": ip,
            "IPPrefixLen": prefix, "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "DriverOpts": None, "DNSNames": None}
    networks = {} if user else {mode: base}
    if mode not in ("host", "none") and (user or cfg.get("endpoints")):
        from runtime.network.connect import live_endpoints
        root = os.path.dirname(os.path.dirname(c.path))
        for name, e in live_endpoints(root, c).items():
            networks[name] = {**base, "IPAMConfig": {"IPv4Address": e["config_ip"]}
                              if e["config_ip"] else None, "Aliases": e["aliases"],
                              "MacAddress": e["mac"], "NetworkID": e["id"],
                              "Gateway": e["gateway"], "IPAddress": e["ip"],
                              "IPPrefixLen": e["prefix"],
                              "DNSNames": [c.name, *e["aliases"], c.id[:12]]}
    if user:                # docker's top-level fields are the default bridge's only
        ip = gw = mac = ""
        prefix = 0
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "",
            "Ports": inspect_ports(*of_container(c)) if mode not in ("host", "none") else {},
            "Gateway": gw, "IPAddress": ip, "IPPrefixLen": prefix, "MacAddress": mac,
            "Networks": networks}


def _resources(r: dict) -> dict:
    """HostConfig's limits, in docker's names."""
    swap = r.get("memory_swap") or 0
    if r.get("memory") and not swap:
        swap = 2 * r["memory"]          # docker's default, as its inspect shows it
    out = {"CpuShares": r.get("cpu_shares") or 0, "Memory": r.get("memory") or 0,
           "NanoCpus": r.get("nano_cpus") or 0, "CpuPeriod": r.get("cpu_period") or 0,
           "CpuQuota": r.get("cpu_quota") or 0,
           "MemoryReservation": r.get("memory_reservation") or 0, "MemorySwap": swap,
           "CpusetCpus": r.get("cpuset_cpus") or "", "CpusetMems": r.get("cpuset_mems") or "",
           "MemorySwappiness": r["memory_swappiness"] if r.get("memory_swappiness", -1) >= 0
           else None, "OomKillDisable": bool(r.get("oom_kill_disable")),
           "PidsLimit": r.get("pids_limit") or None}      # docker's JSON: null when unset
    return out


def doc(c) -> dict:
    cfg, st, status = c.config, c.state, c.status
    argv = cfg.get("argv") or []
    frozen = paused(c)
    state = {
        "Status": "paused" if frozen else status,
        "Running": status in ("running", "restarting"),     # docker: a restarting one runs
        "Paused": frozen,
        "Restarting": status == "restarting",
        "OOMKilled": False,
        "Dead": status == "dead",
        "Pid": init_pid(c),
        "ExitCode": st.get("exit_code") or 0,
        "Error": st.get("error") or "",
        "StartedAt": st.get("started") or ZERO_TIME,
        "FinishedAt": st.get("finished") or ZERO_TIME,
    }
    if st.get("health"):
        state["Health"] = st["health"]
    config = {
        "Hostname": cfg.get("hostname", ""),
        "Domainname": cfg.get("domainname", ""),
        "User": cfg.get("user", ""),
        "Env": cfg.get("env") or [],
        "Cmd": _cmd(argv, cfg.get("entrypoint")),
        "Image": cfg.get("image", ""),
        "WorkingDir": cfg.get("cwd", ""),
        "Entrypoint": cfg.get("entrypoint") or None,
        "Labels": cfg.get("labels") or {},
        "StopSignal": cfg.get("stop_signal") or "SIGTERM",
        "ExposedPorts": dict.fromkeys(cfg.get("exposed") or [], {}) or None,
    }
    if cfg.get("mac_address"):                     # --- dns: --mac-address ---
        config["MacAddress"] = cfg["mac_address"]
    if cfg.get("healthcheck"):
        config["Healthcheck"] = cfg["healthcheck"]
    if cfg.get("stop_timeout") is not None:
        config["StopTimeout"] = cfg["stop_timeout"]
    return {
        "Id": c.id,
        "Created": cfg.get("created", ""),
        "Path": argv[0] if argv else "",
        "Args": argv[1:],
        "State": state,
        "Image": cfg.get("image_id", ""),
        "LogPath": "" if cfg.get("log_driver") == "none" else c.log_path,
        "Name": "/" + c.name,
        "RestartCount": st.get("restart_count") or 0,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "NetworkMode": cfg.get("network", "host"),
            "PortBindings": _port_bindings(cfg),
            "PublishAllPorts": bool(cfg.get("publish_all")),
            "ExtraHosts": cfg.get("extra_hosts") or None,
            "AutoRemove": bool(cfg.get("auto_remove")),
            "Init": True if cfg.get("init") else None,
            "RestartPolicy": cfg.get("restart") or {"Name": "no", "MaximumRetryCount": 0},
            "ReadonlyRootfs": bool(cfg.get("read_only")),
            "SecurityOpt": cfg.get("security_opt") or None,
            "CapAdd": cfg.get("cap_add") or None,
            "CapDrop": cfg.get("cap_drop") or None,
            "Privileged": bool(cfg.get("privileged")),
            "Devices": [{k: d[k] for k in ("PathOnHost", "PathInContainer", "CgroupPermissions")}
                        for d in cfg.get("devices") or []],
            "LogConfig": {"Type": cfg.get("log_driver") or "json-file",
                          "Config": cfg.get("log_config") or {}},
            "ShmSize": cfg.get("shm_size") or 64 << 20,
            **_resources(cfg.get("resources") or {}),
            "GroupAdd": cfg.get("group_add") or None,
            "OomScoreAdj": cfg.get("oom_score_adj") or 0,
            "ContainerIDFile": cfg.get("cidfile") or "",
            "VolumesFrom": cfg.get("volumes_from") or None,
            "UTSMode": cfg.get("uts") or "",
            "DeviceCgroupRules": cfg.get("device_cgroup_rules") or None,
            **({"Sysctls": cfg["sysctls"]} if cfg.get("sysctls") else {}),
            "Ulimits": [{k: u[k] for k in ("Name", "Hard", "Soft")}     # go-units' order
                        for u in cfg.get("ulimits") or []] or None,
            # --- dns: --dns, --dns-search, --dns-option (docker's [] when none) ---
            **{key: list((cfg.get("dns") or {}).get(part) or [])
               for key, part in (("Dns", "servers"), ("DnsSearch", "search"),
                                 ("DnsOptions", "options"))},
        },
        "Mounts": _mounts(c),
        "NetworkSettings": _network_settings(c),
        "Config": config,
    }
