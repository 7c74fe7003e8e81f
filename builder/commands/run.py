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


def register(sub) -> None:
    from builder.commands.registry import parse_bool

    p = sub.add_parser(
        "run", help="run a command in a new container",
        description="Run a command in a new container from IMAGE, in the foreground or (-d) "
                    "detached. The network "
                    "defaults to `bridge` (docker's: an own address on the pybuild0 bridge, "
                    "outbound NAT, -p to publish ports).")
    p.add_argument("--rm", action="store_true",
                   help="remove the container when it exits (always so for now: nothing is kept)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: take it from this environment)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read K=V lines from FILE")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="USER", help="name|uid[:group|gid]")
    p.add_argument("--entrypoint", metavar="CMD", help="override the image's ENTRYPOINT (clears CMD)")
    p.add_argument("--network", "--net", metavar="MODE",
                   help="bridge (default), host or none")
    p.add_argument("-p", "--publish", action="append", default=[],
                   metavar="[IP:][HOSTPORT:]PORT[/PROTO]",
                   help="publish a container port on the host (ranges allowed)")
    p.add_argument("-P", "--publish-all", action="store_true",
                   help="publish every exposed port on a random free host port")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]",
                   help="expose a port (or a range) in addition to the image's")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to /etc/hosts (IP may be host-gateway)")
    p.add_argument("--hostname", dest="hostname", metavar="NAME",
                   help="container host name (default: a random container ID)")
    p.add_argument("--name", metavar="NAME",
                   help="container name (with -d; a foreground run keeps no container yet)")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run in the background under a supervisor and print the container ID")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:ro|rw]",
                   help="bind mount a host path (SRC absolute) or mount a named volume; DST "
                        "alone: an anonymous volume")
    p.add_argument("--mount", action="append", default=[], metavar="SPEC",
                   help="type=bind|volume|tmpfs,source=SRC,target=DST[,readonly][,tmpfs-size=N]")
    p.add_argument("--tmpfs", action="append", default=[], metavar="DST[:OPTS]",
                   help="mount a tmpfs on DST (OPTS: size=64m,mode=1777,ro,...)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("--init", action="store_true",
                   help="run an init as pid 1 that forwards signals and reaps processes (the "
                        "command is then pid 2)")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (b, k, m, g units)")
    p.add_argument("--memory-swap", metavar="BYTES",
                   help="memory + swap limit: -1 unlimited; default twice --memory")
    p.add_argument("--cpus", metavar="N", help="number of CPUs (a decimal, e.g. 0.5)")
    p.add_argument("-c", "--cpu-shares", metavar="N", help="CPU shares (relative weight)")
    p.add_argument("--pids-limit", metavar="N", help="maximum number of processes (-1 unlimited)")
    p.add_argument("--pull", choices=("missing", "always", "never"), default="missing",
                   help="pull the image: when missing (default), always, or never")
    p.add_argument("--tls-verify", default=True, metavar="BOOL", type=parse_bool,
                   help="verify the registry's TLS certificate when pulling (default true)")
    p.add_argument("-q", "--quiet", action="store_true", help="pull without progress output")
    _lifecycle_flags(p)
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs="...", metavar="COMMAND [ARG...]")
    p.set_defaults(func=cmd_run, failure_exit=125)  # docker run: its other codes are the command's


def _lifecycle_flags(p) -> None:
    """--restart, --stop-*, --label, --read-only, --health-*, --log-opt (what the supervisor
    and the record keep)."""
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="no (default), on-failure[:N], always or unless-stopped: the supervisor "
                        "runs the command again in the same container when it ends. With no "
                        "daemon, nothing brings containers back after a reboot: `always` and "
                        "`unless-stopped` restart only while the supervisor lives")
    p.add_argument("--stop-signal", metavar="SIG",
                   help="signal to stop the container with (default: the image's StopSignal, "
                        "else SIGTERM)")
    p.add_argument("--stop-timeout", type=int, metavar="N",
                   help="seconds `stop` waits before SIGKILL (default 10; -1 waits for ever)")
    p.add_argument("-l", "--label", action="append", default=[], metavar="K=V",
                   help="set a label on the container (over the image's)")
    p.add_argument("--label-file", action="append", default=[], metavar="FILE",
                   help="read labels from FILE (K=V lines)")
    p.add_argument("--read-only", action="store_true",
                   help="mount the container's root filesystem read-only (/dev, /proc, /sys, "
                        "tmpfs and volumes stay writable)")
    p.add_argument("--health-cmd", metavar="CMD", help="command to run to check health")
    for flag, what in (("interval", "time between checks"), ("timeout", "longest a check may run"),
                       ("start-period", "time to start before failures count"),
                       ("start-interval", "time between checks during the start period")):
        p.add_argument(f"--health-{flag}", metavar="DURATION", help=f"{what} (ms|s|m|h)")
    p.add_argument("--health-retries", type=int, default=0, metavar="N",
                   help="consecutive failures needed to report unhealthy")
    p.add_argument("--no-healthcheck", action="store_true",
                   help="disable any container-specified HEALTHCHECK")
    p.add_argument("--log-opt", action="append", default=[], metavar="K=V",
                   help="json-file log options: max-size=N[k|m|g] (rotate when the log reaches "
                        "it), max-file=N (logs kept, default 1)")


def _restart_policy(text: str, auto_remove: bool) -> dict:
    """docker's opts.ParseRestartPolicy and ValidateRestartPolicy, and its --rm conflict."""
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
    from runtime.errors import ConfigError

    items = []
    for path in args.label_file:
        lines = _read_env_file(path, "--label-file").splitlines()
        items += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    items += args.label
    out = dict(image_labels or {})
    for item in items:
        k, _, v = item.partition("=")
        if not k:
            raise ConfigError(f"invalid label: {item!r} (a KEY=VALUE)")
        out[k] = v
    return out


def _log_opts(opts: list[str]) -> dict:
    """docker's json-file options (jsonfilelog.New): max-size (go-units FromHumanSize, decimal)
    and max-file; the record keeps docker's strings (LogConfig.Config) and the parsed values."""
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
    """The record's fields from the lifecycle flags against the image config `cfg`."""
    from grammar.values import parse_signal
    from runtime.containers import health
    from runtime.errors import ConfigError

    out = {"restart": _restart_policy(args.restart, args.rm), "labels": _labels(args, cfg.get("Labels")),
           "stop_signal": args.stop_signal or cfg.get("StopSignal") or "SIGTERM",
           "read_only": bool(args.read_only)}
    try:
        parse_signal(out["stop_signal"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.stop_timeout is not None:
        out["stop_timeout"] = args.stop_timeout
    out.update(_log_opts(args.log_opt))
    hc = health.merge(cfg.get("Healthcheck"), _healthcheck_flags(args))
    if hc:
        out["healthcheck"] = hc
    return out


def _fail(msg: str) -> int:
    print(f"pybuild: error: {msg}", file=sys.stderr)
    return 125


def _image(store, args):
    """The image to run, pulled as --pull says (docker's "Unable to find image" first)."""
    from builder.baseimage import PullOptions, get_image
    from cache.errors import StoreError

    if args.pull != "always":
        try:
            return store.image(args.image)
        except StoreError:
            if args.pull == "never":
                raise
        if not args.quiet:
            print(f"Unable to find image '{args.image}' locally", file=sys.stderr)
    from builder.transferview import TransferView

    view = TransferView("auto", quiet=args.quiet)
    try:
        return get_image(store, args.image, PullOptions(args.pull, args.tls_verify), view)
    except StoreError as e:
        raise StoreError(f"{args.image}: {e}") from None
    finally:
        view.close()


def _read_env_file(path: str, flag: str = "--env-file") -> str:
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

    return cgroups.resources(args.memory, args.memory_swap, args.cpus, args.cpu_shares,
                             args.pids_limit)


def _network(args, cfg, check_only: bool = False) -> tuple[str, dict]:
    """--network (docker's default bridge) and what goes with it: {"ports": -p/-P bindings,
    "exposed": the image's ExposedPorts + --expose, "extra_hosts": --add-host, "publish_all"}.
    check_only: the flags' errors only (before the image is there)."""
    from runtime import etcfiles
    from runtime.errors import ConfigError
    from runtime.spec import check_network

    network = args.network or "bridge"
    if network == "default":
        network = "bridge"
    check_network(network)
    if network != "bridge" and not check_only:     # a killed foreground run's bridge goes now
        from runtime.network import bridge_exists
        if bridge_exists():
            from runtime.network.leases import sweep
            sweep()
    extra = [etcfiles.parse_add_host(h) for h in args.add_host]
    net: dict = {"extra_hosts": extra}
    if network != "bridge" and not (args.publish or args.publish_all or args.expose):
        return network, net         # host, none: no ports to parse (nor their modules)
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


def _detach(store, img, args, argv, extra_env, cwd, user, network, limits, mounts,
            life: dict, net: dict | None = None) -> int:
    """run -d: a container record, its supervisor started; print the ID once it runs.
    `create` stops after the record; --rm (auto_remove) has the supervisor remove it at exit."""
    from runtime.containers import config, supervisor
    from runtime.containers.state import Containers

    cfg = img.config.get("config") or {}
    record = {"image": args.image, "image_id": img.id, "argv": argv, "cwd": cwd, "user": user,
              "network": network, "lowerdirs": [os.fspath(store.layer_dir(d))
                                                for d in reversed(img.diff_ids)],
              **life, "auto_remove": bool(args.rm), "entrypoint": cfg.get("Entrypoint") if args.entrypoint
              is None else ([args.entrypoint] if args.entrypoint else None)}
    for key, given in (("init", args.init), ("tty", args.tty), ("interactive", args.interactive)):
        if given:
            record[key] = True
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
        c = Containers(store.root).create(record, args.name, per_id)
    except BaseException:       # the name is taken: the anonymous volumes made for it go
        from runtime.containers.volumes import Volumes
        Volumes(store.root).remove_anonymous(mounts)
        raise
    if getattr(args, "create_only", False):
        print(c.id)
        return 0
    error = supervisor.spawn(os.fspath(store.root), c.id)
    if error is not None:
        return _fail(error)
    print(c.id)
    return 0


def cmd_run(args) -> int:
    import shutil

    from runtime.privileges import require_root

    require_root()

    from cache.errors import StoreError
    from cache.store import Store
    from runtime import mountns
    from runtime.containers import config, volumes
    from runtime.errors import ConfigError, SandboxError
    from runtime.sandbox import run
    from runtime.spec import SandboxSpec

    if args.interactive and args.tty and not args.detach and not os.isatty(0):
        print("pybuild: error: the input device is not a TTY", file=sys.stderr)
        return 1        # docker's CheckTty, before anything is made
    try:
        _network(args, {}, check_only=True)     # bad -p/--network/--add-host: before any pull
        limits = _limits(args)
        if not args.detach:         # the supervisor enters its own (it must not hold ours)
            mountns.enter_private()     # a mount made here (the snapshotter's probe) dies with us
        extra_env = [e for f in args.env_file for e in config.env_file(_read_env_file(f), os.environ, f)]
        extra_env += config.user_env(args.env, os.environ)
        store = Store.open()
        img = _image(store, args)
        lowerdirs = [store.layer_dir(d) for d in reversed(img.diff_ids)]
        cfg = img.config.get("config") or {}
        network, net = _network(args, cfg)
        argv = config.argv(cfg, args.entrypoint, args.command)
        cwd = config.workdir(args.workdir, cfg)
        user = config.user(args.user, cfg)
        life = lifecycle(args, cfg)
        if not args.detach and life["restart"]["Name"] != "no":
            raise ConfigError("--restart needs -d for now (a foreground run has no supervisor)")
        mounts = volumes.image_volumes(volumes.parse_all(args.volume, args.mount, args.tmpfs),
                                       cfg.get("Volumes"))
        if mounts:
            mounts = volumes.prepare(store.root, mounts, lowerdirs)
        if args.detach:
            return _detach(store, img, args, argv, extra_env, cwd, user, network, limits, mounts,
                           life, net)
        hostname = config.hostname(args.hostname, os.urandom(32).hex(), network,
                                   os.uname().nodename)
        env = config.environment(cfg.get("Env") or [], extra_env, hostname, args.tty)
    except (SandboxError, StoreError) as e:
        return _fail(str(e))

    scratch = store.new_scratch()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        spec = SandboxSpec(lowerdirs=lowerdirs, upperdir=scratch / "upper", workdir=scratch / "work",
                           argv=argv, env=env, cwd=cwd, user=user, hostname=hostname,
                           network=network, ports=net.get("ports") or [],
                           extra_hosts=net["extra_hosts"],
                           stdin=0 if args.interactive else devnull, stdout=1, stderr=2,
                           tty=args.tty, make_cwd=True, resources=limits, init=args.init,
                           gid_in_groups=True, readonly_rootfs=args.read_only,
                           mounts=volumes.to_spec(store.root, mounts))
        return run(spec, forward_signals=True, relay_stdin=args.interactive)
    except (SandboxError, StoreError) as e:
        return _fail(str(e))
    finally:
        os.close(devnull)
        shutil.rmtree(scratch, ignore_errors=True)
        if args.rm:     # a foreground run keeps no container: --rm drops its anonymous volumes
            volumes.Volumes(store.root).remove_anonymous(mounts)
