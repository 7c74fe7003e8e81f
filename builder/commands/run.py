"""CLI: `pybuild run` — a container from an image in the store, like `docker run`: in the
foreground, or with -d as a container record owned by a supervisor
(runtime.containers.state, runtime.containers.supervisor) whose ID is printed once it runs.

It runs on the same sandbox as a build's RUN (runtime.sandbox) over the image's layer dirs with a
throw-away upper dir; docker's rules for the image's Entrypoint, Cmd, Env, WorkingDir and User
against the flags are runtime.containers.config's. Exit status follows docker: the command's own
status; 125 when pybuild itself fails (unknown image, bad flag value, sandbox set-up); 126/127
when the command cannot be run.
Imports of the store and the runtime happen only when the command runs.
"""
from __future__ import annotations

import os
import sys

from builder.flags import Command, Flag


def _tls_verify(text: str) -> bool:
    """--tls-verify's word as `pull --tls-verify` reads it (podman's: true/1/yes, false/0/no)."""
    from builder.commands.registry import parse_bool

    try:
        return parse_bool(text)
    except Exception as e:  # noqa: BLE001 - argparse's ArgumentTypeError, without importing argparse
        raise ValueError(str(e)) from None


# run's flags (and create's: builder.commands.containers takes this table), parsed by
# builder.flags with docker's pflag rules; the dests are what cmd_run and lifecycle() read.
_HEALTH_DURATIONS = (("interval", "time between checks"), ("timeout", "longest a check may run"),
                     ("start-period", "time to start before failures count"),
                     ("start-interval", "time between checks during the start period"))
FLAGS = (
    Flag("rm", "bool",
         help="remove the container when it exits (a foreground run keeps no container anyway)"),
    Flag("env", "append", short="e",
         help="set an environment variable K=V (K alone: take it from this environment)"),
    Flag("env-file", "append", help="read K=V lines from a file"),
    Flag("workdir", short="w", help="working directory inside the container"),
    Flag("user", short="u", help="name|uid[:group|gid]"),
    Flag("entrypoint", help="override the image's ENTRYPOINT (clears CMD)"),
    Flag("network", aliases=("net",),
         help="bridge (default), host, none or a network of `pybuild network create`"),
    # --- netw: user-defined networks (builder.commands.network) ---
    Flag("network-alias", "append",
         help="add a name the container's peers on its user-defined network reach it by"),
    Flag("ip", help="IPv4 address on a user-defined network with a --subnet"),
    # --- end netw ---
    # --- dns: resolv.conf's servers, search domains and options; the veth's MAC ---
    Flag("dns", "append", metavar="IP", convert=lambda t: _dns_ip(t),
         help="set a DNS server (on a user-defined network: an upstream of its embedded DNS "
              "server at 127.0.0.11)"),
    Flag("dns-search", "append", metavar="DOMAIN", convert=lambda t: _dns_search(t),
         help="set a DNS search domain"),
    Flag("dns-option", "append", aliases=("dns-opt",), metavar="OPT",
         help="set a DNS option (resolv.conf's options, e.g. ndots:2)"),
    Flag("mac-address", help="container MAC address (e.g. 92:d0:c6:0a:29:33)"),
    # --- end dns ---
    Flag("publish", "append", short="p",
         help="publish a container port on the host: [IP:][HOSTPORT:]PORT[/PROTO] (ranges allowed)"),
    Flag("publish-all", "bool", short="P",
         help="publish every exposed port on a random free host port"),
    Flag("expose", "append",
         help="expose a port PORT[/PROTO] (or a range) in addition to the image's"),
    Flag("add-host", "append", help="add a line HOST:IP to /etc/hosts (IP may be host-gateway)"),
    Flag("hostname", short="h", help="container host name (default: a random container ID)"),
    Flag("name", help="container name (with -d; a foreground run keeps no container yet)"),
    Flag("detach", "bool", short="d",
         help="run in the background under a supervisor and print the container ID"),
    Flag("volume", "append", short="v",
         help="bind mount a host path or mount a named volume: [SRC:]DST[:ro|rw] (SRC absolute "
              "for a bind; DST alone: an anonymous volume)"),
    Flag("mount", "append",
         help="type=bind|volume|tmpfs,source=SRC,target=DST[,readonly][,tmpfs-size=N]"),
    Flag("tmpfs", "append", help="mount a tmpfs: DST[:OPTS] (OPTS: size=64m,mode=1777,ro,...)"),
    Flag("volumes-from", "append", metavar="list",
         help="mount the volumes and binds of a container: CONTAINER[:ro|rw]"),
    Flag("interactive", "bool", short="i", help="keep stdin open"),
    Flag("tty", "bool", short="t", help="allocate a pseudo-terminal"),
    # --- attach: detach keys ---
    Flag("detach-keys", metavar="string",
         help="the keys that detach from the container (`create` then `start -a -i`, `attach`): "
              "ctrl-<a-z@[\\]^_>, DEL or a character, comma-separated (default ctrl-p,ctrl-q). "
              "A foreground run has no supervisor to leave the container with: there they are "
              "only checked, and typed into the container like any key"),
    # --- end attach ---
    Flag("cidfile", metavar="string", help="write the container ID to the file (which must "
                                            "not exist yet)"),
    Flag("platform", metavar="string",
         help="platform of the image: only this machine's (e.g. linux/amd64)"),
    Flag("sig-proxy", "bool", default=True,
         help="relay the signals this process gets to the container (default true; not with a "
              "tty). A foreground run has no daemon to keep the container: a signal that ends "
              "this process ends it too"),
    Flag("domainname", metavar="string", help="container NIS domain name"),
    Flag("group-add", "append", metavar="list",
         help="add a supplementary group (a name of the image's /etc/group or a gid)"),
    Flag("device-cgroup-rule", "append", metavar="list", convert=lambda t: _device_rule(t),
         help='add a rule to the cgroup allowed devices list ("c 1:3 mr", "b 8:* rwm")'),
    Flag("uts", metavar="string", help="UTS namespace to use: host (the host's hostname)"),
    Flag("disable-content-trust", "bool", default=True,
         help="skip image verification (always: pybuild has no content trust; =false is refused)"),
    Flag("sysctl", "append", metavar="map", convert=lambda t: _sysctl(t),
         help="set a namespaced kernel parameter K=V (kernel.shm*, kernel.msg*, kernel.sem, "
              "fs.mqueue.*, net.* off the host network)"),
    Flag("oom-score-adj", "int", metavar="int",
         help="tune the container's OOM preferences (-1000 to 1000)"),
    Flag("init", "bool", help="run an init as pid 1 that forwards signals and reaps processes "
                              "(the command is then pid 2)"),
    Flag("memory", short="m", metavar="bytes", help="memory limit (b, k, m, g units)"),
    Flag("memory-swap", metavar="bytes",
         help="memory + swap limit: -1 unlimited; default twice --memory"),
    Flag("cpus", metavar="decimal", help="number of CPUs (e.g. 0.5)"),
    Flag("cpu-shares", short="c", help="CPU shares (relative weight)"),
    Flag("pids-limit", help="maximum number of processes (-1 unlimited)"),
    Flag("cpu-period", metavar="int", help="limit the CPU CFS period (µs; not with --cpus)"),
    Flag("cpu-quota", metavar="int", help="limit the CPU CFS quota (µs per period; not with --cpus)"),
    Flag("memory-reservation", metavar="bytes", help="memory soft limit"),
    Flag("memory-swappiness", "int", metavar="int",
         help="tune the container's memory swappiness (0 to 100; cgroup v1)"),
    Flag("oom-kill-disable", "bool", help="disable the OOM killer (cgroup v1; with -m)"),
    Flag("cpuset-cpus", metavar="string", help="CPUs the container may use (0-3, 0,1)"),
    Flag("cpuset-mems", metavar="string", help="memory nodes (NUMA) it may use (0-3, 0,1)"),
    Flag("shm-size", metavar="bytes", help="size of /dev/shm (default 64m)"),
    Flag("ulimit", "append", help="a resource limit NAME=SOFT[:HARD] (nofile, nproc, core, ...)"),
    Flag("pull", "choice", default="missing", choices=("always", "missing", "never"),
         help="pull the image: when missing, always, or never"),
    Flag("tls-verify", default=True, metavar="bool", convert=_tls_verify,
         help="verify the registry's TLS certificate when pulling (default true)"),
    Flag("quiet", "bool", short="q", help="pull without progress output"),
    # the lifecycle flags: what the supervisor and the record keep
    Flag("restart", default="no",
         help="no, on-failure[:N], always or unless-stopped: the supervisor runs the command "
              "again in the same container when it ends. With no daemon, nothing brings "
              "containers back after a reboot: `always` and `unless-stopped` restart only while "
              "the supervisor lives"),
    Flag("stop-signal", help="signal to stop the container with (default: the image's "
                             "StopSignal, else SIGTERM)"),
    Flag("stop-timeout", "int",
         help="seconds `stop` waits before SIGKILL (default 10; -1 waits for ever)"),
    Flag("label", "append", short="l", help="set a label K=V on the container (over the image's)"),
    Flag("label-file", "append", help="read labels from a file (K=V lines)"),
    Flag("read-only", "bool", help="mount the container's root filesystem read-only (/dev, "
                                   "/proc, /sys, tmpfs and volumes stay writable)"),
    Flag("health-cmd", help="command to run to check health"),
    *(Flag(f"health-{name}", metavar="duration", help=f"{what} (ms|s|m|h)")
      for name, what in _HEALTH_DURATIONS),
    Flag("health-retries", "int", default=0,
         help="consecutive failures needed to report unhealthy"),
    Flag("no-healthcheck", "bool", help="disable any container-specified HEALTHCHECK"),
    Flag("log-driver", metavar="string",
         help="logging driver: json-file (default) or none (nothing kept; `logs` refuses)"),
    Flag("log-opt", "append", help="json-file log options: max-size=N[k|m|g] (rotate when the "
                                   "log reaches it), max-file=N (logs kept, default 1)"),
    # --- seccomp helper's flags ---
    Flag("security-opt", "append",
         help="seccomp=unconfined|builtin|FILE (docker's JSON profile; default: docker's "
              "profile), no-new-privileges[=true|false]"),
    # --- caps: capabilities, --privileged, --device (runtime.caps, runtime.cgroups) ---
    Flag("cap-add", "append", help="add a Linux capability (SYS_ADMIN or CAP_SYS_ADMIN; ALL)"),
    Flag("cap-drop", "append", help="drop a Linux capability (ALL: every one)"),
    Flag("privileged", "bool", help="give the container every capability, every host device, "
                                    "unmasked /proc and a writable /sys"),
    Flag("device", "append", help="add a host device: HOST[:CONTAINER][:PERMS] (PERMS of rwm)"),
    # --- end caps ---
)
USAGE = "[OPTIONS] IMAGE [COMMAND] [ARG...]"
RUN_ONLY = ("sig-proxy",)       # run's flags docker's create has not


def register(sub) -> None:
    """`run` in the top-level help; cli.main parses its command line with flag_command()."""
    sub.add_parser("run", help="run a command in a new container", add_help=False)


def flag_command(word: str = "run") -> Command:
    """run's command line for builder.flags (cli.main asks each flag-parsed command's module)."""
    return Command(
        "pybuild run", USAGE,
        "Run a command in a new container from IMAGE, in the foreground or (-d) detached. The "
        "network defaults to `bridge` (docker's: an own address on the pybuild0 bridge, "
        "outbound NAT, -p to publish ports).",
        FLAGS, positionals=("image",), rest="command",
        defaults={"func": cmd_run, "failure_exit": 125})  # docker run: its other codes are the command's


def _restart_policy(text: str, auto_remove: bool) -> dict:
    """docker's opts.ParseRestartPolicy and ValidateRestartPolicy, and its --rm conflict."""
    if text == "no":
        return {"Name": "no", "MaximumRetryCount": 0}
    from runtime.errors import ConfigError

    name, colon, count = text.partition(":")
    if colon and not name:
        raise ConfigError("invalid restart policy format: no policy provided before colon")
    most = 0
    if count:
        try:
            most = int(count)
        except ValueError:
            raise ConfigError("invalid restart policy format: maximum retry count must be an "
                              "integer") from None
    if name in ("always", "unless-stopped", "no"):
        if most:
            raise ConfigError("invalid restart policy: maximum retry count can only be used with "
                              "'on-failure'" + (" and cannot be negative" if most < 0 else ""))
    elif name == "on-failure":
        if most < 0:
            raise ConfigError("invalid restart policy: maximum retry count cannot be negative")
    else:
        raise ConfigError(f"invalid restart policy: unknown policy '{name}'; use one of 'no', "
                          f"'always', 'on-failure', or 'unless-stopped'")
    if auto_remove and name != "no":
        raise ConfigError("Conflicting options: --restart and --rm")
    return {"Name": name, "MaximumRetryCount": most}


def _healthcheck_flags(args) -> dict | None:
    """docker's --health-* flags as a HealthConfig (None when none is given)."""
    from grammar.values import HEALTHCHECK_DURATIONS, healthcheck_duration
    from runtime.errors import ConfigError

    hc: dict = {}
    for flag, key in HEALTHCHECK_DURATIONS.items():
        text = getattr(args, "health_" + flag.replace("-", "_"))
        if text is None:
            continue
        try:
            ns = healthcheck_duration(flag, text, cli=True)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if ns:
            hc[key] = ns
    if args.health_retries < 0:
        raise ConfigError("--health-retries cannot be negative")
    if args.health_retries:
        hc["Retries"] = args.health_retries
    if args.health_cmd:
        hc["Test"] = ["CMD-SHELL", args.health_cmd]
    if args.no_healthcheck:
        if hc:
            raise ConfigError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    return hc or None


def _labels(args, image_labels: dict) -> dict:
    """The image's Labels, then --label-file's lines, then --label (docker's order)."""
    items = []
    for path in args.label_file:
        lines = read_env_file(path, "--label-file").splitlines()
        items += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    items += args.label
    out = dict(image_labels or {})
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            from runtime.errors import ConfigError
            raise ConfigError(f"invalid label: {item!r} (a KEY=VALUE)")
        out[k] = v
    return out


def _log_opts(opts: list[str]) -> dict:
    """docker's json-file options (jsonfilelog.New): max-size (go-units FromHumanSize, decimal)
    and max-file; the record keeps docker's strings (LogConfig.Config) and the parsed values."""
    if not opts:
        return {}
    from runtime.cgroups import parse_size
    from runtime.errors import ConfigError, SandboxError

    given = {}
    for item in opts:
        k, _, v = item.partition("=")
        if k not in ("max-size", "max-file"):
            raise ConfigError(f"unknown log opt '{k}' for json-file log driver")
        given[k] = v
    out: dict = {"log_config": given} if given else {}
    if "max-size" in given:
        try:
            size = parse_size(given["max-size"], None, decimal=True)
        except SandboxError as e:
            raise ConfigError(str(e)) from None
        if size <= 0:
            raise ConfigError("max-size must be a positive number")
        out["log_max_size"] = size
    if "max-file" in given:
        try:
            n = int(given["max-file"])
        except ValueError:
            raise ConfigError(f'strconv.Atoi: parsing "{given["max-file"]}": invalid syntax') from None
        if n < 1:
            raise ConfigError("max-file cannot be less than 1")
        out["log_max_file"] = n
    return out


def lifecycle(args, cfg: dict) -> dict:
    """The record's fields from the lifecycle flags against the image config `cfg`. The
    defaults need neither grammar.values (SIGTERM is a signal) nor runtime.containers.health."""
    out = {"restart": _restart_policy(args.restart, args.rm), "labels": _labels(args, cfg.get("Labels")),
           "stop_signal": args.stop_signal or cfg.get("StopSignal") or "SIGTERM",
           "read_only": bool(args.read_only)}
    if out["stop_signal"] != "SIGTERM":
        from grammar.values import parse_signal
        from runtime.errors import ConfigError
        try:
            parse_signal(out["stop_signal"])
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if args.stop_timeout is not None:
        out["stop_timeout"] = args.stop_timeout
    if args.log_driver not in (None, "json-file"):
        from runtime.errors import ConfigError
        if args.log_driver != "none":
            raise ConfigError(f'error looking up logging plugin {args.log_driver}: plugin '
                              f'"{args.log_driver}" not found')
        if args.log_opt:
            raise ConfigError("invalid logging opts for driver none")
        out["log_driver"] = "none"
    out.update(_log_opts(args.log_opt))
    given = (args.health_cmd is not None or args.health_retries or args.no_healthcheck
             or any(getattr(args, "health_" + name.replace("-", "_")) is not None
                    for name, _ in _HEALTH_DURATIONS))
    flags_hc = _healthcheck_flags(args) if given else None
    if flags_hc is not None or cfg.get("Healthcheck"):
        from runtime.containers import health
        hc = health.merge(cfg.get("Healthcheck"), flags_hc)
        if hc:
            out["healthcheck"] = hc
    return out


def _fail(msg: str) -> int:
    print(f"pybuild: error: {msg}", file=sys.stderr)
    return 125


def _image(args) -> tuple[str, str, dict, list[str]]:
    """(store root, image ID, config, layer dirs top first) of the image to run, held for this
    process; pulled as --pull says (docker's "Unable to find image" first). A local image with
    its layers unpacked is found without opening the Store (cache.imagelookup: ~10 ms less);
    the Store, and the pull's modules, only when that is not enough."""
    from cache.errors import StoreError
    from cache.imagelookup import open_image
    from cache.layout import default_root

    if args.pull != "always":
        root = default_root()
        found = open_image(root, args.image)
        if found is not None:
            return (root, *found)
    from cache.store import Store

    store = Store.open()
    img = None
    if args.pull != "always":
        try:
            img = store.image(args.image)
        except StoreError:
            if args.pull == "never":
                from builder.baseimage import PullOptions, get_image

                get_image(store, args.image, PullOptions("never"))   # its error, with a hint
        if img is None and not args.quiet:
            print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
    if img is None:
        from builder.baseimage import PullOptions, get_image
        from builder.transferview import TransferView

        view = TransferView("auto", quiet=args.quiet)
        try:
            img = get_image(store, args.image, PullOptions(args.pull, args.tls_verify), view)
        except StoreError as e:
            raise StoreError(f"{args.image}: {e}") from None
        finally:
            view.close()
    dirs = [os.fspath(d) for d in store.layer_dirs(img.diff_ids)]
    return os.fspath(store.root), img.id, img.config, dirs


def read_env_file(path: str, flag: str = "--env-file") -> str:
    """The text of an --env-file or --label-file: a missing or non-UTF-8 file is one line."""
    from runtime.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{flag} {path}: {(e.strerror or '').lower()}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: invalid utf8 bytes") from None


def _limits(args):
    """The limit flags as runtime.spec.Resources (every container gets a cgroup, as in docker)."""
    from runtime import cgroups

    if args.oom_kill_disable and not args.memory:     # docker's client's, then its daemon's
        print("WARNING: Disabling the OOM killer on containers without setting a '-m/--memory' "
              "limit may be dangerous.\nWARNING: OOM killer is disabled for the container, but "
              "no memory limit is set, this can result in the system running out of resources.",
              file=sys.stderr)

    return cgroups.resources(args.memory, args.memory_swap, args.cpus, args.cpu_shares,
                             args.pids_limit, args.cpu_period, args.cpu_quota,
                             args.memory_reservation, args.cpuset_cpus, args.cpuset_mems,
                             args.memory_swappiness, args.oom_kill_disable)


def _security(args) -> list[str]:
    """--security-opt as docker's CLI sends them (a profile FILE read, checked and compiled
    now: a bad one is one line before anything is made)."""
    if not args.security_opt:
        return []
    from runtime.seccomp.policy import cli_options

    return cli_options(args.security_opt)


def process_limits(shm_size: str | None, ulimit: list[str]) -> dict:
    """--shm-size and --ulimit as the record (and SandboxSpec) keep them, checked with docker's
    lines; {} when neither is given (build takes them too)."""
    from runtime.errors import ConfigError

    out: dict = {}
    if shm_size:
        from runtime.cgroups import parse_size

        out["shm_size"] = parse_size(shm_size, "--shm-size")
        if out["shm_size"] <= 0:
            raise ConfigError(f'invalid argument "{shm_size}" for "--shm-size" flag: '
                              "must be greater than 0")
    if ulimit:
        from runtime import ulimits

        out["ulimits"] = ulimits.parse_all(ulimit)
    return out


def _privileges(args) -> dict:
    """--cap-add, --cap-drop, --privileged and --device as the record keeps them (the names as
    given, docker's HostConfig.Devices), checked with docker's lines; {} when none is given."""
    out: dict = {}
    if not (args.cap_add or args.cap_drop or args.privileged or args.device):
        return out
    from runtime import caps, rootfs

    caps.mask(args.cap_add, args.cap_drop, args.privileged)
    devices = [rootfs.parse_device(d) for d in args.device]
    rootfs.device_nodes(devices)        # a host path that is no device: before anything is made
    for key, value in (("cap_add", args.cap_add), ("cap_drop", args.cap_drop),
                       ("privileged", bool(args.privileged)), ("devices", devices)):
        if value:
            out[key] = value
    return out


# --- dns: --dns, --dns-search, --dns-option, --mac-address as docker's CLI checks them ---
def _dns_ip(text: str) -> str:
    """docker 20.10 CLI's validator of --dns (its line)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"{text} is not an ip address") from None


def _dns_search(text: str) -> str:
    """docker's opts.ValidateDNSSearch: "." or a domain name."""
    if text == ".":
        return text
    labels = text.rstrip().removesuffix(".").split(".")
    if len(text) > 255 or not all(
            lb and lb[0].isalnum() and lb[-1].isalnum() and lb.isascii()
            and all(ch.isalnum() or ch == "-" for ch in lb) for lb in labels):
        raise ValueError(f"{text} is not a valid domain")
    return text


def _dns(args) -> dict:
    """The record's dns ({servers, search, options}) and mac_address, when given; a bad MAC is
    docker's line."""
    out: dict = {}
    if args.dns or args.dns_search or args.dns_option:
        out["dns"] = {"servers": list(args.dns), "search": list(args.dns_search),
                      "options": list(args.dns_option)}
    if args.mac_address:
        from runtime.errors import ConfigError

        parts = args.mac_address.replace("-", ":").split(":")
        if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                      for p in parts):
            raise ConfigError(f"{args.mac_address} is not a valid mac address")
        out["mac_address"] = ":".join(parts).lower()
    return out
# --- end dns ---


def _user_network(args, network: str) -> dict:
    """A user-defined network's part of the record: network_id, aliases, ip (docker's errors
    for --ip and --network-alias off one, or --ip without the network's own --subnet)."""
    from runtime.errors import ConfigError

    if network in ("bridge", "host", "none"):
        if args.ip:
            raise ConfigError("user specified IP address is supported on user defined networks "
                              "only")
        if args.network_alias:
            raise ConfigError("network-scoped alias is supported only for containers in user "
                              "defined networks")
        return {}
    from cache.layout import default_root
    from runtime.network.defs import Networks

    d = Networks(default_root()).find(network)
    if args.ip:
        from ipaddress import IPv4Address
        try:
            IPv4Address(args.ip)
        except ValueError:
            raise ConfigError(f"invalid IPv4 address: {args.ip}") from None
        if not d.get("UserSubnet"):
            raise ConfigError("user specified IP address is supported only when connecting to "
                              "networks with user configured subnets")
    return {"network_id": d["Id"], "aliases": list(args.network_alias), "ip": args.ip or ""}


def sweep_stale_networks(default: bool = True, keep: str = "") -> None:
    """What a killed foreground run or build left on the host goes now: the default bridge
    (when `default`: a run off it) and every user network's bridge but `keep`'s, each when no
    live lease holds it and its linger is over (runtime.network.leases.sweep). A stat and a
    listdir when there is nothing to do; a bridge a detached sweep already waits on is its."""
    from runtime.network import STATE_DIR, bridge_exists, sweep_waits, user_bridges

    if default and bridge_exists() and not sweep_waits():
        from runtime.network.leases import sweep
        sweep()
    others = [n for n in user_bridges() if n != keep and not sweep_waits(os.path.join(STATE_DIR, n))]
    if others:
        from runtime.network import Net
        from runtime.network.leases import sweep
        for n in others:
            sweep(Net(os.path.join(STATE_DIR, n), "br-" + n, id=n))


def _network(args, cfg, check_only: bool = False) -> tuple[str, dict]:
    """--network (docker's default bridge, or a user-defined network) and what goes with it:
    {"ports": -p/-P bindings, "exposed": the image's ExposedPorts + --expose, "extra_hosts":
    --add-host, "publish_all"; on a user network network_id, aliases, ip}. check_only: the
    flags' errors only (before the image is there)."""
    from runtime import etcfiles
    from runtime.errors import ConfigError
    from runtime.spec import NETWORKS, check_network

    network = args.network or "bridge"
    if network == "default":
        network = "bridge"
    if network in NETWORKS or network.startswith("container:"):
        check_network(network)
    net: dict = _user_network(args, network) if (args.ip or args.network_alias
                                                  or network not in NETWORKS) else {}
    if not check_only:
        sweep_stale_networks(default=network != "bridge", keep=net.get("network_id", "")[:12])
    net["extra_hosts"] = [etcfiles.parse_add_host(h) for h in args.add_host]
    bridged = network not in ("host", "none")
    if not (args.publish or args.publish_all or args.expose) and (
            not bridged or not cfg.get("ExposedPorts")):
        return network, net         # no ports to parse (nor their modules)
    from runtime.network import ports

    exposed = ports.exposed(cfg.get("ExposedPorts"), args.expose)
    bindings = [b for raw in args.publish for b in ports.parse(raw)]
    if args.publish_all:
        given = {ports.key(b) for b in bindings}
        bindings += ports.publish_all([k for k in exposed if k not in given])
    exposed = list(dict.fromkeys(exposed + [ports.key(b) for b in bindings]))
    if bindings and network == "none":
        raise ConfigError("conflicting options: port publishing and the container type "
                          "network mode")
    if bindings and network == "host" and not check_only:
        print("WARNING: Published ports are discarded when using host network mode",
              file=sys.stderr)
        bindings = []
    net.update(ports=bindings, exposed=exposed, publish_all=bool(args.publish_all))
    return network, net


def _detach(root: str, image_id: str, image_config: dict, lowerdirs: list[str], args, argv,
            extra_env, cwd, user, network, limits, mounts, life: dict,
            net: dict | None = None, attached: bool = False, cidfile=None) -> int:
    """run -d: a container record, its supervisor started; print the ID once it runs.
    `create` stops after the record; --rm (auto_remove) has the supervisor remove it at exit.
    `attached` (a foreground run with --restart, which needs a supervisor): no ID; this
    process is attached from before the start, as `start -a` (signals proxied, the detach
    keys leave it running), and exits with the first run's code while the policy goes on, as
    docker's client does."""
    from runtime.containers import config, supervisor
    from runtime.containers.state import Containers

    cfg = image_config.get("config") or {}
    record = {"image": args.image, "image_id": image_id, "argv": argv, "cwd": cwd, "user": user,
              "network": network, "lowerdirs": lowerdirs,
              **life, "auto_remove": bool(args.rm), "entrypoint": cfg.get("Entrypoint") if args.entrypoint
              is None else ([args.entrypoint] if args.entrypoint else None)}
    for key, given in (("init", args.init), ("tty", args.tty), ("interactive", args.interactive)):
        if given:
            record[key] = True
    if args.interactive and getattr(args, "create_only", False):   # --- attach ---
        record["stdin_once"] = True   # docker's StdinOnce (create -i): an attached stdin's end closes it
    if mounts:
        record["mounts"] = mounts
    record.update({k: v for k, v in (net or {}).items() if v})
    if limits is not None:
        record["resources"] = limits.to_dict()   # SandboxSpec(resources=Resources(**it))

    def per_id(cid: str) -> dict:
        hostname = config.hostname(args.hostname, cid, network, os.uname().nodename)
        return {"hostname": hostname,
                "env": config.environment(cfg.get("Env") or [], extra_env, hostname, args.tty)}

    try:
        c = Containers(root).create(record, args.name, per_id)
    except BaseException:       # the name is taken: the anonymous volumes made for it go
        from runtime.containers.volumes import Volumes
        Volumes(root).remove_anonymous(mounts)
        raise
    if cidfile is not None:
        cidfile.write(c.id)
    if getattr(args, "create_only", False):
        print(c.id)
        return 0
    if attached:
        return _run_attached(root, c, args.detach_keys, args.sig_proxy)
    error = supervisor.spawn(root, c.id)
    if error is not None:
        return _fail(error)
    print(c.id)
    return 0


def _run_attached(root: str, c, keys_text: str | None, sig_proxy: bool = True) -> int:
    import socket

    from runtime import tty
    from runtime.containers import attach, supervisor
    from runtime.containers.inspect import init_pid

    stdin = bool(c.config.get("interactive"))
    size = tty.stdio_size() if c.config.get("tty") and os.isatty(1) else None
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:            # attached before it starts: nothing it writes is missed
        mine.sendall(attach.hello(stdin, size))
        error = supervisor.spawn(root, c.id, client=theirs.fileno(), winsize=size)
        theirs.close()
        if error is not None:
            return _fail(error)

        def proxy(sig: int) -> None:
            pid = init_pid(c.reload())
            if pid:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        try:
            code = attach.session(mine, stdin=stdin, tty=bool(c.config.get("tty")),
                                  keys=tty.chosen_detach_keys(keys_text) if stdin else None,
                                  on_signal=proxy if sig_proxy else None)
        except tty.Detached:
            return 0
        if code is None:
            c.reload()
            code = c.state.get("exit_code", 0) if c.status == "exited" else 0
        return code
    finally:
        theirs.close()
        mine.close()


def only_host_platform(text: str) -> None:
    """--platform of build, run and create: this machine's platform (what it leaves out is
    the host's), else ValueError with the line to show."""
    from cache import platform

    host = platform.host()
    try:
        want = {**host, **platform.parse(text)}
    except ValueError as e:
        raise ValueError(f"--platform {e}") from None
    if platform.to_string(want) != platform.to_string(host):
        raise ValueError(f"--platform {text}: only {platform.to_string(host)} (this machine) "
                         "is supported")


class CidFileError(Exception):
    """--cidfile cannot be made: docker's line and exit status (`code`)."""

    def __init__(self, msg: str, code: int):
        super().__init__(msg)
        self.code = code


class CidFile:
    """--cidfile as docker's client keeps it: refused when the file is there, made (empty)
    before the container, the ID written once it is known (through the fd that made it: the
    path is never opened again, so a link swapped in meanwhile is not followed), removed when
    none was."""

    def __init__(self, path: str):
        self.path, self.written, self.fd = path, False, -1
        if os.path.exists(path):
            raise CidFileError(f"container ID file found, make sure the other container isn't "
                               f"running or delete {path}", 125)
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as e:
            # docker run's exit status for this error: 127 for "no such file", 126 for
            # "permission denied" (its runStartContainerErr reads the text)
            code = 127 if e.errno == 2 else 126 if e.errno == 13 else 125
            raise CidFileError(f"failed to create the container ID file: open {path}: "
                               f"{(e.strerror or '').lower()}", code) from None

    def write(self, cid: str) -> None:
        os.write(self.fd, cid.encode())
        self.written = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.written:
            try:
                os.unlink(self.path)
            except OSError:
                pass


_SYSCTL_KEYS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _sysctl(text: str) -> str:
    """docker's opts.ValidateSysctl: K=V with K one of the IPC ones, fs.mqueue.* or net.*."""
    key, eq, _ = text.partition("=")
    if not eq or not (key in _SYSCTL_KEYS or key.startswith(("fs.mqueue.", "net."))):
        raise ValueError(f"sysctl '{text}' is not whitelisted")
    return text


def _device_rule(text: str) -> str:
    """docker's opts.ValidateDeviceCgroupRule: TYPE MAJOR:MINOR ACCESS."""
    import re

    if not re.fullmatch(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})", text):
        raise ValueError(f"invalid device cgroup format '{text}'")
    return text


def _extra(args) -> dict:
    """--platform (this machine's only), --domainname, --group-add, --oom-score-adj checked
    with docker's lines; the record's (and the spec's) fields of those given (--cidfile's and
    --volumes-from's too, for inspect)."""
    from runtime.errors import ConfigError

    out: dict = {}
    if not args.disable_content_trust:
        raise ConfigError("content trust (Notary) is not supported: drop "
                          "--disable-content-trust=false")
    if args.uts is not None:
        if args.uts not in ("", "host"):
            raise ConfigError("--uts: invalid UTS mode")
        if args.uts == "host" and args.hostname:
            raise ConfigError("conflicting options: hostname and the UTS mode")
        if args.uts:
            out["uts"] = "host"
    if args.device_cgroup_rule:
        out["device_cgroup_rules"] = list(args.device_cgroup_rule)
    if args.platform:
        try:
            only_host_platform(args.platform)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if args.oom_score_adj is not None:
        if not -1000 <= args.oom_score_adj <= 1000:
            raise ConfigError(f"Invalid value {args.oom_score_adj}, range for oom score adj is "
                              "[-1000, 1000]")
        if args.oom_score_adj:
            out["oom_score_adj"] = args.oom_score_adj
    if args.domainname:
        out["domainname"] = args.domainname
    if args.group_add:
        out["group_add"] = list(args.group_add)
    if args.cidfile:
        out["cidfile"] = args.cidfile
    if args.volumes_from:
        out["volumes_from"] = list(args.volumes_from)
    if args.sysctl:
        out["sysctls"] = dict(s.partition("=")[::2] for s in args.sysctl)
        net = next((k for k in out["sysctls"] if k.startswith("net.")), None)
        if net and args.network == "host":
            raise ConfigError(f'sysctl "{net}" not allowed in host network namespace')
    return out


def cmd_run(args) -> int:
    from runtime.privileges import require_root

    require_root()

    if args.interactive and args.tty and not args.detach and not os.isatty(0):
        print("pybuild: error: the input device is not a TTY", file=sys.stderr)
        return 1        # docker's CheckTty, before anything is made
    cidfile = None
    if args.cidfile:
        try:
            cidfile = CidFile(args.cidfile)
        except CidFileError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            return e.code
    try:
        return _cmd_run(args, cidfile)
    finally:
        if cidfile is not None:
            cidfile.close()


def _cmd_run(args, cidfile) -> int:
    from cache.errors import StoreError
    from cache.fspath import remove_tree
    from cache.layout import new_scratch
    from runtime import mountns
    from runtime.containers import config, volumes
    from runtime.errors import ConfigError, SandboxError
    from runtime.sandbox import run
    from runtime.spec import SandboxSpec

    try:
        if args.detach_keys:        # --- attach: docker's line for bad keys, before anything
            from runtime.tty import detach_keys
            try:
                detach_keys(args.detach_keys)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        extra = _extra(args)                    # --platform, --oom-score-adj, ...: checked
        _network(args, {}, check_only=True)     # bad -p/--network/--add-host: before any pull
        privileges = _privileges(args)          # bad --cap-add/--device too
        privileges.update(process_limits(args.shm_size, args.ulimit))
        dns = _dns(args)                        # --- dns: and a bad --mac-address ---
        limits = _limits(args)
        security = _security(args)
        if not args.detach:         # the supervisor enters its own (it must not hold ours)
            mountns.enter_private()     # a mount made here (the snapshotter's probe) dies with us
        extra_env = [e for f in args.env_file for e in config.env_file(read_env_file(f), os.environ, f)]
        extra_env += config.user_env(args.env, os.environ)
        root, image_id, image_config, lowerdirs = _image(args)
        cfg = image_config.get("config") or {}
        network, net = _network(args, cfg)
        argv = config.argv(cfg, args.entrypoint, args.command)
        cwd = config.workdir(args.workdir, cfg)
        user = config.user(args.user, cfg)
        life = lifecycle(args, cfg)
        if security:
            life["security_opt"] = security         # the record's: start and exec apply it too
        life.update(privileges)                 # the record's too (checked once, above)
        life.update(dns)                        # --- dns: the record's, and the spec's below ---
        life.update(extra)
        # a foreground run with a restart policy needs a supervisor: run -d, attached
        attached = not args.detach and life["restart"]["Name"] != "no"
        mounts = volumes.image_volumes(
            volumes.volumes_from(root, args.volumes_from,
                                 volumes.parse_all(args.volume, args.mount, args.tmpfs)),
            cfg.get("Volumes"))
        if mounts:
            mounts = volumes.prepare(root, mounts, lowerdirs)
        if args.detach or attached:
            return _detach(root, image_id, image_config, lowerdirs, args, argv, extra_env, cwd,
                           user, network, limits, mounts, life, net, attached=attached,
                           cidfile=cidfile)
        cid = os.urandom(32).hex()
        hostname = config.hostname(args.hostname, cid, network, os.uname().nodename)
        env = config.environment(cfg.get("Env") or [], extra_env, hostname, args.tty)
        mode, endpoint = network, None
        if net.get("network_id"):       # a user network: the bridge driver and its Endpoint
            from runtime.network.defs import endpoint as endpoint_of
            mode, endpoint = "bridge", endpoint_of(root, {**net, "network": network}, cid,
                                                   args.name or "")
    except (SandboxError, StoreError) as e:
        return _fail(str(e))

    scratch = new_scratch(root)
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        spec = SandboxSpec(lowerdirs=lowerdirs, upperdir=os.path.join(scratch, "upper"),
                           workdir=os.path.join(scratch, "work"),
                           argv=argv, env=env, cwd=cwd, user=user, hostname=hostname,
                           network=mode, ports=net.get("ports") or [], endpoint=endpoint,
                           extra_hosts=net["extra_hosts"],
                           stdin=0 if args.interactive else devnull, stdout=1, stderr=2,
                           tty=args.tty, make_cwd=True, resources=limits, init=args.init,
                           gid_in_groups=True, readonly_rootfs=args.read_only,
                           mounts=volumes.to_spec(root, mounts), security_opt=security,
                           dns=life.get("dns"), mac_address=life.get("mac_address") or "",
                           domainname=extra.get("domainname") or "",
                           group_add=extra.get("group_add") or [],
                           oom_score_adj=extra.get("oom_score_adj"),
                           sysctls=extra.get("sysctls") or {},
                           device_cgroup_rules=extra.get("device_cgroup_rules") or [],
                           uts_host=extra.get("uts") == "host",
                           volatile=True,   # the scratch pair goes when the run ends
                           **privileges)
        if cidfile is not None:
            cidfile.write(cid)
        return run(spec, forward_signals=args.sig_proxy, relay_stdin=args.interactive)
    except (SandboxError, StoreError) as e:
        return _fail(str(e))
    finally:
        os.close(devnull)
        remove_tree(scratch)
        if args.rm:     # a foreground run keeps no container: --rm drops its anonymous volumes
            volumes.Volumes(root).remove_anonymous(mounts)
