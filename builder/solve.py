"""Solving a plan: run each needed stage, step by step, skipping every step whose key is cached.

A step's key is `cache.keys.step_key(kind, parent_key, inputs)` (DESIGN.md): config-only steps
roll the key forward without touching the store; RUN, COPY, ADD and WORKDIR look their key up in
the store's cache index and, on a miss, execute (`builder.steps.dispatch`) and record the layer.
Independent stages run in parallel threads; a stage waits only for the stages it reads.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from builder import imageconfig as ic
from builder.baseimage import PullOptions
from builder.errors import BuildError
from builder.plan import Plan, Stage
from builder.steps.dispatch import dispatch, run_onbuild
from cache import layout
from cache.image import add_layer
from grammar import ast
from grammar.errors import DockerfileError, ExpansionError


@dataclass
class BuildOptions:
    """Everything a build was asked for, as the solver reads it."""

    context: Path
    dockerfile: ast.Dockerfile
    dockerfile_path: Path | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "default"
    allow_host_network: bool = False  # the network.host entitlement (--allow, --network host)
    secrets: dict[str, Path] = field(default_factory=dict)
    ssh: dict[str, str] = field(default_factory=dict)   # --ssh ID -> an agent socket path
    extra_hosts: list[str] = field(default_factory=list)    # --add-host, as /etc/hosts lines
    shm_size: int = 0                                       # --shm-size (0: 64 MiB)
    ulimits: list = field(default_factory=list)             # --ulimit (runtime.ulimits.parse)
    epoch: int | None = 0  # builder.sourcedate; None: --timestamp now (wall clock, real times)
    pull: PullOptions = field(default_factory=PullOptions)
    cache_from: list = field(default_factory=list)  # builder.cacheopts.CacheSpec, asked in order
    cache_to: list = field(default_factory=list)  # CacheSpec: exported after the build
    explain_cache: bool = False  # --explain-cache: every miss's whole reason after the build
    dockerfile_bytes: int = 0  # the Dockerfile's size (`transferring dockerfile: 375B`)


class Canceled(Exception):
    """A step the build's ^C killed: it shows CANCELED, and the build ends as interrupted."""


class _StagePool:
    """The stages run in the given order on up to `workers` threads (a stage waits only for
    those it reads, which come before it); `result(i)` waits for stage i and returns its
    state or raises what it raised. concurrent.futures' pool did this, but importing it (and
    logging, traceback and queue with it) was ~5% of a small build."""

    def __init__(self, run, stages: list[tuple[int, Stage]], workers: int):
        self._run = run
        self._todo = list(stages)
        self._lock = threading.Lock()
        self._done = {i: threading.Event() for i, _ in stages}
        self._out: dict[int, tuple[bool, object]] = {}
        self._threads = [threading.Thread(target=self._work, name=f"stage_{n}")
                         for n in range(workers)]

    def start(self) -> _StagePool:
        for t in self._threads:
            t.start()
        return self

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._todo:
                    return
                i, stage = self._todo.pop(0)
            try:
                self._out[i] = (True, self._run(stage))
            except BaseException as e:  # noqa: BLE001 - the waiter raises it
                self._out[i] = (False, e)
            self._done[i].set()

    def result(self, i: int) -> ImageState:
        # in slices: a ^C the kernel hands to a stage's thread sets Python's flag, which the
        # main thread only reads when its wait returns (an endless one never does)
        while not self._done[i].wait(0.05):
            pass
        ok, value = self._out[i]
        if not ok:
            raise value
        return value

    def cancel(self) -> None:
        """The stages not started yet never run (waiting for one raises Canceled)."""
        with self._lock:
            for i, _ in self._todo:
                self._out[i] = (False, Canceled())
                self._done[i].set()
            self._todo.clear()

    def join(self) -> None:
        for t in self._threads:
            t.join()


@dataclass
class ImageState:
    """What a step leaves behind: its key, the layer chain and the image config."""

    key: str
    diff_ids: list[str]
    config: dict
    args: dict[str, str | None] = field(default_factory=dict)  # declared ARGs, for child stages


_VERTEX_STEPS = (ast.Run, ast.Copy, ast.Add, ast.Workdir)


def image_base(stage: Stage) -> bool:
    """The stage starts from an image, which BuildKit shows as a FROM vertex (a stage FROM
    another stage or scratch has none)."""
    return stage.base_stage is None and stage.base != "scratch"


def vertex_total(stage: Stage) -> int:
    """The n of `[stage i/n]`, as BuildKit's dockerfile2llb counts: the FROM of an image, each
    RUN, COPY, ADD and WORKDIR (a `WORKDIR /` too, though it makes no vertex); ARG, ENV, LABEL
    and the other config-only instructions make none."""
    return int(image_base(stage)) + sum(isinstance(i, _VERTEX_STEPS) for i in stage.instructions)


def vertex_prefix(plan: Plan, stage: Stage, i: int, total: int) -> str:
    """`[base 2/4] ` (the stage's name, or stage-N, only when the Dockerfile has several; i
    padded to n's width); nothing in a stage with no vertex counted."""
    if not total:
        return ""
    label = f"{stage.label} " if len(plan.stages) > 1 else ""
    return f"[{label}{i:>{len(str(total))}}/{total}] "


class StageRun:
    """The dispatch state of one stage while its instructions run."""

    def __init__(self, solver: Solver, stage: Stage, state: ImageState, args: dict[str, str | None]):
        self.solver = solver
        self.stage = stage
        self.state = state
        self.args = args  # in-scope ARGs (None: declared without a value)
        self.cmd_set = False
        self.total = vertex_total(stage)
        self.named = 1 if image_base(stage) else 0  # vertices named so far: the FROM is one
        self.no_cache = solver.opts.no_cache or (stage.name or "") in solver.opts.no_cache_filter
        self.layer_steps = 0  # layer steps passed so far (their order in an exported cache)

    # -- environment ------------------------------------------------------------------------
    @property
    def df(self) -> ast.Dockerfile:
        return self.solver.plan.dockerfile

    def expansion_env(self) -> dict[str, str]:
        """ARGs then ENV: "ENV always overrides ARG"."""
        env = {k: v for k, v in self.args.items() if v is not None}
        env.update(ic.env_dict(self.state.config))
        return env

    def run_env(self) -> list[str]:
        """The environment of a RUN: the image Env plus the declared ARGs not shadowed by it,
        and SOURCE_DATE_EPOCH=<the build's epoch> unless one of those sets it. BuildKit passes
        it only to a stage that declares `ARG SOURCE_DATE_EPOCH`; pybuild always does, so
        compileall/py_compile write checked-hash .pyc (PEP 552), whose validity does not rest
        on the mtimes the layer clamps. It is never in the image's Env."""
        env = list(self.state.config["config"].get("Env") or [])
        names = {e.partition("=")[0] for e in env}
        for k, v in self.args.items():
            if v is not None and k not in names:
                env.append(f"{k}={v}")
                names.add(k)
        epoch = self.solver.opts.epoch
        if epoch is not None and "SOURCE_DATE_EPOCH" not in names:
            env.append(f"SOURCE_DATE_EPOCH={epoch}")
        return env

    def expand(self, ins: ast.Instruction, word: str) -> str:
        from grammar.lexer import ShellLex

        try:
            return ShellLex(self.df.escape).process_word(word, self.expansion_env())
        except ExpansionError as e:
            raise e.at(self.df.filename, ins.line) from None

    def expand_words(self, ins: ast.Instruction, word: str) -> list[str]:
        from grammar.lexer import ShellLex

        try:
            return ShellLex(self.df.escape).process_words(word, self.expansion_env())
        except ExpansionError as e:
            raise e.at(self.df.filename, ins.line) from None

    def error(self, ins: ast.Instruction, message: str) -> DockerfileError:
        return DockerfileError(self.df.filename, ins.line, message)

    # -- steps ------------------------------------------------------------------------------
    def step_name(self, ins: ast.Instruction) -> str:
        """BuildKit's vertex name: `[stage i/n] ` (see `vertex_prefix`) and the instruction as
        written with the stage's ARG and ENV values in (RUN keeps quotes and unset variables as
        written, COPY/ADD/WORKDIR expand as a word; the text itself if that fails), its
        keyword upper case. Never cut: the terminal view fits it to the screen."""
        from grammar.lexer import ShellLex

        text = ins.original or ins.keyword.upper()
        run = isinstance(ins, ast.Run)
        try:
            text = ShellLex(self.df.escape, raw_quotes=run, skip_unset_env=run).process_word(
                text, self.expansion_env())
        except ExpansionError:
            pass
        word, sep, rest = text.partition(" ")
        self.named += 1
        return vertex_prefix(self.solver.plan, self.stage, self.named, self.total) + word.upper() + sep + rest

    def config_step(self, ins: ast.Instruction, created_by: str) -> None:
        """A config-only step: history entry, key rolled forward, nothing in the store."""
        from cache.keys import step_key

        ic.add_history(self.state.config, created_by, empty_layer=True, epoch=self.solver.opts.epoch)
        self.state.key = step_key(ins.keyword.upper(), self.state.key, {"created_by": created_by})
        if self.solver.explainer is not None:
            self.solver.explainer.config_step(self.stage.label, ins.line, created_by, self.state.key)

    def layer_step(self, ins: ast.Instruction, n: int, created_by: str, inputs: dict, execute,
                   files: dict | None = None, ignore: list | None = None) -> None:
        """A layer step: cached by key, else `execute(vertex) -> diff_id | None` runs it.
        `files`/`ignore` (COPY/ADD from the context): what builder.explain compares."""
        from cache.errors import StoreError
        from cache.keys import step_key

        if self.solver.cancelled.is_set():
            raise Canceled()            # ^C: no step starts after it
        self.solver.context_loaded()    # what this step reads of the context is hashed now
        store = self.solver.store
        # the layer's bytes depend on the epoch (file times are clamped to it)
        inputs = {**inputs, "epoch": self.solver.opts.epoch}
        key = step_key(ins.keyword.upper(), self.state.key, inputs)
        name = self.step_name(ins)  # `n`, the instruction's place, is not what BuildKit shows
        vertex = self.solver.progress.start(name)
        explainer = self.solver.explainer
        noted = None if explainer is None else explainer.layer_step(
            self.stage.label, name, ins.line, ins.original or ins.keyword.upper(), key,
            self.state.key, inputs, files, ignore)
        vertex.step = True  # a replay shows it CACHED
        hit = None if self.no_cache else store.cache_get(key)
        if hit is not None:
            diff_id = hit.get("diff_id")
            try:
                if diff_id:
                    store.layer_dirs([diff_id])  # a delta: its base too
            except StoreError:
                hit = None
        if hit is None and not self.no_cache and self.solver.importers:
            hit = self.solver.import_step(key, vertex)
        if hit is not None:
            self.solver.progress.cached(vertex)
            diff_id = hit.get("diff_id")
        else:
            if noted is not None and not self.no_cache:  # only now: a hit costs nothing more
                text, reason = explainer.why(self.stage.label, noted, set(self.args))
                self.solver.progress.explain(vertex, text, reason)
            try:
                diff_id = execute(vertex)
            except BaseException as e:
                if self.solver.cancelled.is_set():      # ^C: it was killed, not failed
                    self.solver.progress.cancel(vertex)
                    raise Canceled() from None
                self.solver.progress.fail(vertex, str(e).splitlines()[0] if str(e) else type(e).__name__)
                raise
            store.cache_put(key, {"diff_id": diff_id})
            self.solver.progress.done(vertex)
        self.solver.passed(self.stage.index, self.layer_steps, key, diff_id)
        self.layer_steps += 1
        if diff_id:
            add_layer(self.state.config, diff_id)
            self.state.diff_ids = [*self.state.diff_ids, diff_id]
        ic.add_history(self.state.config, created_by, empty_layer=not diff_id, epoch=self.solver.opts.epoch)
        self.state.key = key

    def lowerdirs(self, diff_ids: list[str] | None = None) -> list[Path]:
        store = self.solver.store
        return store.layer_dirs(self.state.diff_ids if diff_ids is None else diff_ids)


class Solver:
    def __init__(self, store, plan: Plan, opts: BuildOptions, progress, recorder=None):
        self.recorder = recorder  # builder.replay.Recorder: what a replay must check again
        self.explainer = None  # builder.explain.Explainer: why a step missed the cache
        self.store = recorder.store(store) if recorder else store
        self.plan = plan
        self.opts = opts
        self.progress = progress
        self.results: _StagePool | None = None     # each stage's outcome, once run() started
        self._lock = threading.Lock()
        self._ctx = None
        self._pulls: dict[str, threading.Lock] = {}
        self._pulled: set[str] = set()  # refs checked with the registry in this build
        self._fetched: set[str] = set()  # refs whose image came from a registry in this build
        self._ctx_vertex = None  # `[internal] load build context` while it is open
        self._passed: list[tuple[int, int, str, str | None]] = []  # (stage, nth, key, diff_id)
        self._import_lock = threading.Lock()
        self.cancelled = threading.Event()  # ^C: running RUNs are killed, nothing more starts
        self._live: set = set()             # the RUNs' process trees (track/untrack)
        self.importers = []  # (CacheSpec, cache.registry.cache.Importer), asked in order
        self.exporters = []  # (CacheSpec, target): opened first, so a bad one fails before step 1
        if opts.cache_from or opts.cache_to:
            from builder.cacheopts import open_target
            from cache.registry.cache import Importer

            tls = opts.pull.tls_verify
            self.importers = [(spec, Importer(open_target(spec, tls_verify=tls), spec.tag))
                              for spec in opts.cache_from]
            self.exporters = [(spec, open_target(spec, tls_verify=tls)) for spec in opts.cache_to]

    def run(self) -> ImageState:
        from builder.progress import loaded

        order = self.plan.order
        stages = [self.plan.stages[i] for i in order]
        reads = any(isinstance(ins, (ast.Copy, ast.Add)) and not ins.flag("from")
                    for st in stages for ins in st.instructions)
        # BuildKit's (N/M): the loads, one metadata vertex per base image, the context, the
        # steps (the export is counted once it starts, as there)
        self.progress.expected = (2 + len({st.base for st in stages if image_base(st)}) + reads
                                  + sum(vertex_total(st) for st in stages))
        ctx = self.context(load=False)
        loaded(self.progress, self.plan.dockerfile.filename, self.opts.dockerfile_bytes,
               ctx.ignore_file.stat().st_size if ctx.ignore_file else 0)
        workers = max(1, min(len(order), os.cpu_count() or 2, 4))
        # set before a stage runs: a stage asks it for the stages it reads (stage_result)
        self.results = pool = _StagePool(self._run_stage, [(i, self.plan.stages[i]) for i in order],
                                         workers)
        pool.start()
        try:
            try:
                return pool.result(self.plan.target)
            except BaseException as e:
                pool.cancel()           # a stage not started never starts
                if isinstance(e, KeyboardInterrupt):
                    self.cancel()       # the RUNs die now; the wait below is short
                raise
            finally:
                self.context_loaded()
        finally:
            pool.join()

    # -- ^C ----------------------------------------------------------------------------------
    def track(self, tree) -> None:
        """A RUN's process tree (runtime.sandbox.run's on_start): killed by cancel()."""
        with self._lock:
            if self.cancelled.is_set():
                tree.kill()
            self._live.add(tree)

    def untrack(self, tree) -> None:
        with self._lock:
            self._live.discard(tree)

    def cancel(self) -> None:
        """Interrupted (^C): every running RUN is killed (its step shows CANCELED), no step
        starts after it; what finished is in the cache for the next build."""
        with self._lock:
            self.cancelled.set()
            for tree in self._live:
                tree.kill()

    # -- the imported and exported build cache ---------------------------------------------
    def passed(self, stage: int, nth: int, key: str, diff_id: str | None) -> None:
        """Note a layer step the build went through (for --cache-to)."""
        with self._lock:
            self._passed.append((stage, nth, key, diff_id))

    def import_step(self, key: str, vertex) -> dict | None:
        """A local miss: the first --cache-from that has the step, its layer now in the store
        and the key recorded locally; None when none has it. A cache that cannot be read is a
        warning and a miss, as in BuildKit: the step runs."""
        from cache.errors import StoreError

        store = self.store
        with self._import_lock:  # each cache's manifest is read once, on the first miss
            for spec, imp in self.importers:
                if not imp.loaded:
                    v = self.progress.start(f"importing cache manifest from {spec.describe()}")
                    try:
                        imp.load()
                    except StoreError as e:
                        self.warn(v, f"cache import from {spec.describe()} failed: {e} "
                                     "(building without it)")
                    self.progress.done(v)
        for spec, imp in self.importers:
            try:
                hit = imp.lookup(store, key)
                if hit is not None and hit["diff_id"]:
                    store.layer_dirs([hit["diff_id"]])
            except StoreError as e:
                self.warn(vertex, f"cache import from {spec.describe()} failed: {e} (running the step)")
                continue
            if hit is not None:
                store.cache_put(key, hit)
                return hit
        return None

    def warn(self, vertex, message: str) -> None:
        self.progress.log(vertex, f"WARNING: {message}\n".encode())

    def cache_steps(self, mode: str) -> list[tuple[str, str | None]]:
        """The layer steps an export holds: mode=max every stage built, mode=min the final
        image's own (the target stage and the stages it is FROM), in Dockerfile order."""
        stages = None
        if mode == "min":
            stages, i = set(), self.plan.target
            while i is not None:
                stages.add(i)
                i = self.plan.stages[i].base_stage
        with self._lock:
            passed = sorted(self._passed)
        return [(key, d) for st, _n, key, d in passed if stages is None or st in stages]

    def export_caches(self) -> None:
        if not self.exporters:  # no --cache-to: nothing of cache.registry to import
            return
        from cache.errors import StoreError
        from cache.registry.cache import export

        for spec, target in self.exporters:
            v = self.progress.start(f"exporting cache to {spec.describe()}")
            try:
                export(self.store, self.cache_steps(spec.mode), target, spec.tag)
            except (StoreError, OSError) as e:
                why = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
                msg = f"--cache-to {spec.describe()}: {why}"
                if not spec.ignore_error:
                    self.progress.fail(v, msg)
                    raise BuildError(msg) from None
                self.warn(v, msg)
            self.progress.done(v)

    def stage_result(self, index: int) -> ImageState:
        return self.results.result(index)

    def context(self, *, load: bool = True):
        """The build context (walked and hashed lazily, once per build). `load`: a step reads
        it, which BuildKit shows as `[internal] load build context` (ended by `context_loaded`)."""
        from builder.context import BuildContext

        with self._lock:
            if self._ctx is None:
                self._ctx = BuildContext(self.opts.context, self.opts.dockerfile_path,
                                         stat_cache=Path(self.store.root) / layout.STAT_CACHE)
                # what a replay must check again (the bytes read are the context's keyed_bytes)
                if self.recorder is not None:
                    self._ctx.observe = self.recorder.observe
                    self._ctx.observed = self.recorder.observed
                    self.recorder.tree = self._ctx
                    self._ctx.prestat = self.recorder.prestat
            if load and self._ctx_vertex is None:
                from builder.progress import CONTEXT

                self._ctx_vertex = self.progress.start(CONTEXT)
            return self._ctx

    def context_loaded(self) -> None:
        """The context vertex ends when the step that read it starts (or the build ends)."""
        from builder.progress import context_read

        with self._lock:
            v = self._ctx_vertex
            if v is not None and v.finished is None:  # `transferring context: 35B`
                context_read(self.progress, v, self._ctx.keyed_bytes)

    # -- a stage -----------------------------------------------------------------------------
    def _base_state(self, st: Stage) -> tuple[ImageState, dict[str, str | None]]:

        if st.base_stage is not None:
            parent = self.stage_result(st.base_stage)
            return (ImageState(parent.key, list(parent.diff_ids), ic.inherit(parent.config)),
                    dict(parent.args))
        if st.base == "scratch":
            return ImageState("scratch", [], ic.scratch_config()), {}
        img = self.image(st.base, st.from_.line)
        return ImageState(img.id, list(img.diff_ids), ic.inherit(img.config)), {}

    def image(self, ref: str, line: int):
        """An image FROM or COPY --from names: from the store, pulled when missing (or always,
        with --pull), under BuildKit's `[internal] load metadata for REF` vertex (once per
        reference and build) with the pull's lines."""
        from builder.baseimage import get_image, log_view
        from cache.errors import StoreError

        with self._lock:
            lock = self._pulls.setdefault(ref, threading.Lock())
        with lock:  # two stages FROM one image pull it once
            try:
                return self.store.image(ref) if ref in self._pulled else self._get(ref, get_image, log_view)
            except StoreError as e:
                raise DockerfileError(self.plan.dockerfile.filename, line, f"{ref}: {e}") from None

    def _get(self, ref: str, get_image, log_view):
        from cache.refs import display

        v = self.progress.start(f"[internal] load metadata for {display(ref, default_tag=True)}")

        def log(text: str) -> None:
            self._fetched.add(ref)   # the registry was asked: the FROM is not CACHED
            self.progress.log(v, (text + "\n").encode())
        try:
            img = get_image(self.store, ref, self.opts.pull, log_view(log))
        except BaseException as e:
            self.progress.fail(v, str(e))
            raise
        self.progress.done(v)
        self._pulled.add(ref)
        return img

    def _run_stage(self, st: Stage) -> ImageState:
        state, args = self._base_state(st)  # a stage's own FROM shows only an image's vertex
        if image_base(st):
            from cache.refs import display

            v = self.progress.start(vertex_prefix(self.plan, st, 1, vertex_total(st))
                                    + f"FROM {display(st.base, default_tag=False)}")
            # what was in the store already is CACHED, a pulled image's layers were DONE now
            v.step = True   # and in the store for a replay, which shows it CACHED
            (self.progress.done if st.base in self._fetched else self.progress.cached)(v)
        if self.explainer is not None:
            self.explainer.base(st.label, st.base, state.key, st.base_stage is not None)
        run = StageRun(self, st, state, args)
        triggers = state.config.get("config", {}).get("OnBuild") or []
        if triggers:
            state.config["config"]["OnBuild"] = None
            run_onbuild(run, triggers)
        for n, ins in enumerate(st.instructions, start=2):
            try:
                dispatch(run, ins, n)
            except BuildError as e:
                raise located(e, self.plan.dockerfile.filename, ins.line) from None
        state.args = dict(run.args)  # stages FROM this one inherit declared ARGs
        return state


def located(e: BuildError, filename: str, line: int) -> BuildError:
    """The error with the Dockerfile line it came from in front, as every user error has."""
    msg = str(e)
    if msg.startswith(f"{filename}:"):
        return e
    return BuildError(f"{filename}:{line}: {msg}")


def build(store, plan: Plan, opts: BuildOptions, progress, recorder=None) -> str:
    """Run the plan, store the final image and return its ID (the config digest)."""
    from builder.explain import Explainer, report
    from builder.progress import exported

    solver = Solver(store, plan, opts, progress, recorder)
    solver.explainer = explainer = Explainer(
        store.root, str(opts.dockerfile_path or opts.context / "-"), opts.tags, opts.target)
    final = solver.run()
    v = progress.start("exporting to image", once=True)  # a replay prints its own
    config = ic.finalize(final.config, opts.epoch, opts.labels)
    image_id = store.put_image(config)
    progress.status(v, "exporting layers", v.started)
    if opts.tags:  # held by this process since put_image (cache.leases): prune -a spares it
        store.tag_all(opts.tags, image_id)
    exported(progress, v, image_id, opts.tags)
    solver.export_caches()
    explainer.save()
    if opts.explain_cache:
        import sys

        progress.close()
        report(explainer.misses, sys.stderr)
    return image_id

