"""The import graph of grammar/, cache/, runtime/ and builder/, read from the source with `ast`:
no cycle anywhere (lazy imports inside functions count: a cycle hidden behind one is still a
design bug), dependencies one way (builder -> grammar, cache, runtime; runtime -> cache), and the
start-up paths (`--help`, a replayed build, `pybuild run`) free of rich, lark, zstandard and
pyroute2.

An edge is every import statement a module holds, wherever it is: `import a.b`, `from a import
b` (to the submodule a.b when there is one, else to a), relative forms resolved against the
module's package, and `importlib.import_module(...)` / `__import__(...)` calls whose name is a
constant, or a constant prefix plus a loop variable over a tuple of names (builder/cli.py's
COMMAND_MODULES); any other dynamic import fails test_every_dynamic_import_is_resolved.
Importing a.b also runs a/__init__.py; that implicit edge is left out (else every package whose
__init__ imports a submodule lazily would count as a cycle)."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from busybox_fixture import copy_store

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("grammar", "cache", "runtime", "builder")
HEAVY = ("rich", "lark", "zstandard", "pyroute2")
# what each package may import of the others (DESIGN.md: dependencies point one way)
ALLOWED = {"grammar": set(), "cache": set(), "runtime": {"cache"},
           "builder": {"grammar", "cache", "runtime"}}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the four packages."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            parts = list(p.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _base(name: str, level: int) -> str:
    """The package a relative import of `level` dots in module `name` starts from."""
    parts = name.split(".")
    if not _is_package(name):
        parts.pop()
    return ".".join(parts[:len(parts) - (level - 1)] if level > 1 else parts)


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _names_of(node: ast.AST, consts: dict[str, list[str]]) -> list[str] | None:
    """The strings a tuple/list literal of str constants, or a module-level name bound to one,
    holds; None if it is anything else."""
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, (ast.Tuple, ast.List)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def _loop_values(var: str, node: ast.AST, parents: dict, consts) -> list[str] | None:
    """The values loop variable `var` takes in the nearest for-loop or comprehension around
    `node` that binds it, when it iterates over a known tuple of names; else None."""
    while node in parents:
        node = parents[node]
        loops = [node] if isinstance(node, ast.For) else \
            node.generators if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp,
                                                 ast.DictComp)) else []
        for loop in loops:
            if isinstance(loop.target, ast.Name) and loop.target.id == var:
                return _names_of(loop.iter, consts)
    return None


def _is_import_call(node: ast.AST) -> bool:
    f = node.func if isinstance(node, ast.Call) else None
    return (isinstance(f, ast.Attribute) and f.attr == "import_module" and
            isinstance(f.value, ast.Name) and f.value.id == "importlib") or \
        (isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def dynamic_imports(tree: ast.Module, parents: dict) -> list[tuple[ast.Call, list[str] | None]]:
    """(call, modules it imports, or None when that cannot be read from the source) for every
    importlib.import_module / __import__ call in `tree`. Resolved: a constant absolute name;
    f"prefix{var}" or "prefix" + var where var loops over a tuple of names (a literal, or one
    bound at module level)."""
    bound = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and
             not isinstance(n.ctx, ast.Load)] + [a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)]
    consts = {t.id: v for st in tree.body if isinstance(st, ast.Assign) and len(st.targets) == 1
              for t in st.targets if isinstance(t, ast.Name) and bound.count(t.id) == 1
              for v in [_names_of(st.value, {})] if v is not None}   # bound once, at module level
    out = []
    for node in ast.walk(tree):
        if not _is_import_call(node):
            continue
        arg = node.args[0] if node.args and not node.keywords else None
        prefix = var = None
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            prefix, var = arg.value, ""
        elif isinstance(arg, ast.JoinedStr) and len(arg.values) == 2 and \
                isinstance(arg.values[0], ast.Constant) and \
                isinstance(arg.values[1], ast.FormattedValue) and \
                isinstance(arg.values[1].value, ast.Name) and arg.values[1].conversion == -1 and \
                arg.values[1].format_spec is None:
            prefix, var = arg.values[0].value, arg.values[1].value.id
        elif isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add) and \
                isinstance(arg.left, ast.Constant) and isinstance(arg.left.value, str) and \
                isinstance(arg.right, ast.Name):
            prefix, var = arg.left.value, arg.right.id
        values = None
        if var == "":
            values = [""]
        elif var:
            values = _loop_values(var, node, parents, consts)
        ok = values is not None and not prefix.startswith(".")   # relative: needs package=
        out.append((node, [prefix + v for v in values] if ok else None))
    return out


def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level?) for every import in module `name`; the target
    is the dotted name as imported (project or not)."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}

    def module_level(node) -> bool:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return False
        return True

    dynamic = dict(dynamic_imports(tree, parents))
    out = []
    for node in ast.walk(tree):
        if node in dynamic:
            targets = dynamic[node] or []
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = _base(name, node.level)
                mod = f"{base}.{mod}" if mod and base else (mod or base)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod
                       for a in node.names]
        else:
            continue
        if _type_checking_only(node, parents):
            continue
        for t in targets:
            out.append((t, node.lineno, module_level(node)))
    return out


def graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line}."""
    g: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for m in MODULES:
        for t, line, _ in imports_of(m):
            if t in MODULES and t != m:
                g[m].setdefault(t, line)
    return g


def cycles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component with
    more than one module (Tarjan's algorithm, iterative)."""
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        sccs.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(g[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
    out = []
    for comp in sccs:  # a shortest way back to the component's first module
        members, start = set(comp), comp[0]
        prev, frontier = {start: None}, [start]
        while frontier and start not in [w for v in frontier for w in g[v]]:
            nxt = []
            for v in frontier:
                for w in sorted(g[v]):
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in g[v])
        path = [last]
        while prev[path[-1]] is not None:
            path.append(prev[path[-1]])
        out.append(path[::-1] + [start])
    return out


def _describe(g, path: list[str]) -> str:
    return " -> ".join(f"{a} (line {g[a][b]})" for a, b in pairwise(path)) + f" -> {path[-1]}"


def test_the_graph_sees_lazy_relative_and_submodule_imports():
    """The reader itself: lazy (function-level) and relative imports are edges, and `from
    package import submodule` points at the submodule (grammar/__init__ imports .parser lazily)."""
    targets = {t: level for t, _, level in imports_of("grammar")}
    assert targets.get("grammar.errors") is True
    assert targets.get("grammar.parser") is False
    assert cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c", "a"]]


def _dynamic(source: str) -> list[list[str] | None]:
    tree = ast.parse(source)
    return [t for _, t in dynamic_imports(tree, {c: p for p in ast.walk(tree)
                                                 for c in ast.iter_child_nodes(p)})]


def test_the_graph_sees_dynamic_imports():
    """`importlib.import_module` of a constant, or of a prefix plus a name looped over a tuple
    of names, is an edge (builder/cli.py imports its command modules so); anything else is
    reported as unresolved, not silently left out."""
    cli_edges = {t for t, _, _ in imports_of("builder.cli")}
    assert {"builder.commands.build", "builder.commands.images", "builder.commands.run"} <= cli_edges
    names = "NAMES = ('a', 'b')\nimport importlib\n"
    assert _dynamic(names + "def f():\n    for n in NAMES:\n        importlib.import_module(f'p.{n}')\n") \
        == [["p.a", "p.b"]]
    assert _dynamic(names + "[importlib.import_module('p.' + n) for n in ('c',)]\n") == [["p.c"]]
    assert _dynamic("__import__('shutil')\nimportlib.import_module('x.y')\n") == [["shutil"], ["x.y"]]
    for unresolvable in ("importlib.import_module(name)\n", "__import__(f'p.{n}')\n",
                         "importlib.import_module('.x', package='p')\n",
                         "def f(NAMES):\n    for n in NAMES:\n        importlib.import_module(f'p.{n}')\n",
                         "for n in g():\n    importlib.import_module(f'p.{n}')\n"):
        assert _dynamic(names + unresolvable) == [None], unresolvable


def test_every_dynamic_import_is_resolved():
    """An import the graph cannot read would hide its edges from the cycle and layering checks."""
    bad = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(), str(path))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        bad += [f"{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}"
                for call, targets in dynamic_imports(tree, parents) if targets is None]
    assert not bad, "dynamic imports the import graph cannot resolve (use a plain import, or " \
        "a constant prefix plus a name from a module-level tuple):\n" + "\n".join(bad)


def test_no_import_cycle():
    g = graph()
    found = cycles(g)
    assert not found, "import cycles (lazy imports included):\n" + "\n".join(
        _describe(g, c) for c in found)


def test_dependencies_point_one_way():
    bad = []
    for m in MODULES:
        pkg = m.split(".")[0]
        for t, line, _ in imports_of(m):
            other = t.split(".")[0]
            if other in ALLOWED and other != pkg and other not in ALLOWED[pkg]:
                bad.append(f"{MODULES[m].relative_to(REPO)}:{line} imports {t}")
    assert not bad, "layering (builder -> grammar, cache, runtime; runtime -> cache):\n" + "\n".join(bad)


_PROBE = """
import json, sys
sys.argv = ["pybuild", *json.loads(sys.argv[1])]
from builder.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as e:
    rc = e.code
print(json.dumps([rc, sorted(m for m in sys.modules if m.split(".")[0] in {packages})]),
      file=sys.__stderr__)
"""


def loaded(*args: str) -> tuple[int, list[str]]:
    """(exit code, modules loaded) for `pybuild ARGS` run in a fresh interpreter."""
    code = _PROBE.format(packages=repr(set(PACKAGES) | set(HEAVY)))
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
    *output, last = r.stderr.strip().splitlines() or [""]
    try:
        rc, mods = json.loads(last)
    except ValueError:
        raise AssertionError(f"pybuild {' '.join(args)} did not finish: {r.stderr[-2000:]}") from None
    assert rc == 0, f"pybuild {' '.join(args)} exited {rc}: {output[-20:]}"
    return rc, mods


def _start_up_paths(tmp_path) -> dict[str, tuple[int, list[str]]]:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("x\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY f /f\nRUN cat /f\nENV A=1\n")
    build = ("build", "--progress", "plain", "-t", "app", str(ctx))
    loaded(*build)  # the first build records what the second replays
    return {"--help": loaded("--help"), "a replayed build": loaded(*build),
            "pybuild run": loaded("run", "--rm", "app", "true")}


@pytest.fixture(scope="module")
def start_up(tmp_path_factory, busybox_store) -> dict[str, tuple[int, list[str]]]:
    """path -> (exit code, modules loaded), on a copy of the busybox store."""
    root = copy_store(busybox_store.root, tmp_path_factory.mktemp("store") / "root")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYBUILD_ROOT", str(root))
        return _start_up_paths(tmp_path_factory.mktemp("ctx"))


def test_start_up_paths_load_no_heavy_library(start_up):
    """What the user waits for: `--help`, a replayed build and `pybuild run` import none of
    rich, lark, zstandard, pyroute2 (each costs tens of ms)."""
    for what, (rc, mods) in start_up.items():
        assert rc == 0, what
        assert not [m for m in mods if m.split(".")[0] in HEAVY], (what, mods)


def test_start_up_modules_import_no_heavy_library_at_module_level(start_up):
    """Stronger than what one run loads: no module of those paths imports a heavy library at
    module level, so no branch of them (another flag, an error path) can pull one in at import."""
    start_up_modules = {m for _, mods in start_up.values() for m in mods if m in MODULES}
    bad = [f"{MODULES[m].relative_to(REPO)}:{line} imports {t}"
           for m in sorted(start_up_modules) for t, line, top in imports_of(m)
           if top and t.split(".")[0] in HEAVY]
    assert start_up_modules, "the probe saw no project module"
    assert not bad, "heavy imports at module level on a start-up path:\n" + "\n".join(bad)


# The standard library that `pybuild run --rm --network none IMAGE CMD` does without: each of
# these costs 2-25 ms to import on a slow machine (re pulls enum, functools and collections;
# dataclasses pulls inspect, ast, dis, tokenize), against a 50 ms budget for the whole run
# (issue 10). They stay fine where they are needed: an error path, a flag, a build, `run -d`.
NOT_ON_A_PLAIN_RUN = ("argparse", "gettext", "locale", "re", "enum", "functools", "collections",
                      "contextlib", "dataclasses", "inspect", "ast", "dis", "tokenize", "typing",
                      "pathlib", "urllib", "ipaddress", "shutil", "fnmatch", "bz2", "lzma",
                      "tempfile", "random", "threading", "json", "signal", "subprocess", "socket",
                      "selectors")


@pytest.mark.parametrize("bridge", ["no bridge", pytest.param("a bridge lingering", marks=pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
    reason="the bridge network needs root and iptables (run as root; apt-get install iptables)"))])
def test_a_plain_run_imports_only_what_it_uses(tmp_path, busybox_store, bridge):
    """`-X importtime` lists every module the command imports, its own and the standard
    library's, started as install.sh's launcher starts it (python -I -S, sys.path set); with
    a bridge left by a run just before, a `none` run sweeps it (runtime.network.leases)."""
    root = copy_store(busybox_store.root, tmp_path / "root")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYBUILD_ROOT": str(root),
           "PYBUILD_BRIDGE_LINGER": "3"}
    if bridge != "no bridge":
        subprocess.run([sys.executable, "-m", "builder", "run", "--rm", "busybox", "true"],
                       cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
        assert os.path.exists("/sys/class/net/pybuild0")
        from runtime.network import sweep_waits
        end = time.monotonic() + 5      # the release's waiting sweep is on its way
        while not sweep_waits() and time.monotonic() < end:
            time.sleep(0.01)
    code = (f"import sys; sys.path[:0] = [{str(REPO)!r}]; from builder.cli import main; "
            "sys.exit(main(['run', '--rm', '--network', 'none', 'busybox', 'true']))")
    r = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", "-c", code], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = [ln.split("|")[2].strip() for ln in r.stderr.splitlines()
            if ln.startswith("import time:") and "| imported package" not in ln]
    assert "runtime.process" in mods, mods          # the probe sees the run's own modules
    bad = [m for m in mods if m.split(".")[0] in NOT_ON_A_PLAIN_RUN or m == "cache.store"]
    assert not bad, f"`pybuild run --rm --network none` imports {bad}"
    # a sweep waits out the linger: the run leaves it to it (no leases module, no network lock)
    assert "runtime.network.leases" not in mods
