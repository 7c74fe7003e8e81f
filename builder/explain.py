"""Why a step rebuilt: each build of a Dockerfile and tag leaves a small record of its steps'
key inputs, and a step that misses the cache is compared with the same step of that record.

The record (`<store>/explain/<slot>.m`, slot = the Dockerfile's path, the tags and the
target; marshal, written through cache.atomic: a listing of 100,000 files saves and loads in a
tenth of JSON's time) holds per stage its base (reference and image ID) and, in
order, every step: its Dockerfile line and text, key, parent key, the inputs its key was made of
and, for COPY/ADD from the context, one line per file (content digest, type, mode, owner). A
missed step is explained by the first of: no earlier build, a new step, its Dockerfile line
edited, its own inputs (files, ARG/ENV values, flags, the epoch), an earlier step or the base
image, or (the same inputs) a cache entry that is gone. The solver loads the record only at the
first miss and this module is imported only by a build that runs in full: a replayed (fully
cached) build never touches it, so the record is the last build that ran in full.
"""
from __future__ import annotations

import json
import os
import zlib

from cache import atomic, layout, sealed

RECORD_VERSION = 2
SHOWN_FILES = 3  # the progress line names this many files, then "and N more"


def slot(dockerfile: str | None, tags: list[str], target: str | None) -> str:
    text = json.dumps([dockerfile, sorted(tags), target]).encode()
    return f"{zlib.crc32(text):08x}{zlib.adler32(text):08x}"


class Explainer:
    """What this build did, step by step, and why a step missed (against the last record)."""

    def __init__(self, root, dockerfile: str | None, tags: list[str], target: str | None):
        self.path = os.path.join(os.fspath(root), layout.EXPLAIN_DIR,
                                 slot(dockerfile, tags, target) + ".m")
        self.tmp = os.path.join(os.fspath(root), layout.TMP_DIR)
        self.lock = os.path.join(os.fspath(root), layout.LOCK)
        self.stages: dict[str, dict] = {}
        self.misses: list[tuple[str, str, dict]] = []  # (step name, short text, reason)
        self._prev: dict | None = None
        self._loaded = False
        self._compared: dict[tuple, tuple] = {}  # (id old, id new, args) -> (old, new, changes)

    # -- recording -----------------------------------------------------------------------
    def stage(self, label: str) -> dict:
        return self.stages.setdefault(label, {"base": None, "image": None, "steps": []})

    def base(self, label: str, ref: str, image: str, stage: bool = False) -> None:
        """The stage's base: an image reference and its ID, or (`stage`) an earlier stage and
        its key."""
        st = self.stage(label)
        st["base"], st["image"], st["from_stage"] = ref, image, stage

    def config_step(self, label: str, line: int, text: str, key: str) -> None:
        self.stage(label)["steps"].append({"config": True, "line": line, "text": text, "key": key})

    def layer_step(self, label: str, name: str, line: int, text: str, key: str, parent: str,
                   inputs: dict, files: dict | None, ignore: list | None) -> dict:
        """Note a layer step; `files`: {path: "type mode uid:gid capability content"} of what
        it copies from the context, `ignore`: the .dockerignore patterns then."""
        step = {"name": name, "line": line, "text": text, "key": key, "parent": parent,
                "inputs": inputs, "files": files, "ignore": ignore}
        self.stage(label)["steps"].append(step)
        return step

    def save(self) -> None:
        """Write this build's record (tmp + rename under the store lock)."""
        # each step's inputs as JSON has them (lists, string keys), as the record held them when
        # it was JSON: a later build compares them with its own (json round-tripped) inputs;
        # the big part, a COPY's file listing, is str -> str already and goes as it is
        stages = {label: {**st, "steps": [{**step, "inputs": json.loads(json.dumps(step["inputs"]))}
                                          if "inputs" in step else step for step in st["steps"]]}
                  for label, st in self.stages.items()}
        doc = {"v": RECORD_VERSION, "stages": stages}
        try:
            data = sealed.dumps(doc)
        except ValueError:
            return  # a value marshal cannot write: no record (the next miss says why not)
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with atomic.Lock(self.lock).held():
                atomic.write_file(self.path, data, tmp_dir=self.tmp, durable=False)  # a help
        except OSError:
            pass  # an explanation is a help, never a reason for a build to fail

    # -- explaining ----------------------------------------------------------------------
    def previous(self) -> dict | None:
        if not self._loaded:
            self._loaded = True
            doc = sealed.read(self.path)
            if isinstance(doc, dict) and doc.get("v") == RECORD_VERSION:
                self._prev = doc
        return self._prev

    def previous_step(self, label: str, step: dict) -> dict | None:
        """The same layer step (`step`, as noted) in the last record: at its index with its
        text, else the first with its text; None if there is none."""
        prev = self.previous()
        pst = prev["stages"].get(label) if prev else None
        if pst is None:
            return None
        steps = self.stages[label]["steps"]
        idx = next(i for i, s in enumerate(steps) if s is step)
        old = pst["steps"][idx] if idx < len(pst["steps"]) else None
        if old is None or old.get("config") or old["text"] != step["text"]:
            old = next((s for s in pst["steps"] if not s.get("config") and s["text"] == step["text"]),
                       None)
        return old

    def why(self, label: str, step: dict, args: set[str]) -> tuple[str | None, dict]:
        """(one short line, the structured reason) for a step that missed the cache; `args`:
        the ARG names in scope (to say ARG or ENV). With no earlier build only the first miss
        gets a line (None after it): every step of a new Dockerfile misses for that reason."""
        try:
            reason = self._reason(label, step, args)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            reason = {"kind": "unreadable"}  # a record of another shape: no reason to fail
        said = any(r["kind"] == reason["kind"] for _, _, r in self.misses)
        self.misses.append((step["name"], describe(reason, None), reason))
        if reason["kind"] in ("first-build", "unreadable") and said:
            return None, reason
        return describe(reason, SHOWN_FILES), reason

    def _reason(self, label: str, step: dict, args: set[str]) -> dict:
        prev = self.previous()
        if prev is None:
            return {"kind": "first-build"}
        pst = prev["stages"].get(label)
        cur = self.stages[label]
        if pst is None:
            return {"kind": "new-stage", "stage": label}
        idx = next(i for i, s in enumerate(cur["steps"]) if s is step)
        old = pst["steps"][idx] if idx < len(pst["steps"]) else None
        if old is None or old.get("config") or old["text"] != step["text"]:
            same = [s for s in pst["steps"] if not s.get("config") and s["text"] == step["text"]]
            if old is None and not same:
                return {"kind": "new-step", "line": step["line"], "text": step["text"]}
            if old is not None and old["text"] != step["text"] and not same:
                return {"kind": "line", "line": step["line"], "old": old["text"],
                        "new": step["text"]}
            old = same[0] if same else old
        changes = self._changes(old, step, args)
        if changes:
            return {"kind": "inputs", "changes": changes}
        if old["parent"] != step["parent"]:
            return self._earlier(cur, pst, idx, args)
        return {"kind": "gone", "key": step["key"]}

    def _changes(self, old: dict, new: dict, args: set[str]) -> list[dict]:
        """`_input_changes`, once per pair of steps: a COPY that missed is compared again for
        each later step's reason (100,000 files: a pass over both listings each time)."""
        key = (id(old), id(new), tuple(sorted(args)))
        hit = self._compared.get(key)
        if hit is None or hit[0] is not old or hit[1] is not new:
            hit = self._compared[key] = (old, new, _input_changes(old, new, args))
        return hit[2]

    def _earlier(self, cur: dict, pst: dict, idx: int, args: set[str]) -> dict:
        """The parent key moved: the first earlier step of the stage that changed by itself
        (new, its text edited, its own inputs), else the stage's base."""
        old_keys = {s["key"] for s in pst["steps"]}
        for j, s in enumerate(cur["steps"][:idx]):
            if s["key"] in old_keys:
                continue
            o = pst["steps"][j] if j < len(pst["steps"]) else None
            if (o is None or o["text"] != s["text"] or bool(o.get("config")) != bool(s.get("config"))
                    or (not s.get("config") and self._changes(o, s, args))):
                out = {"kind": "earlier", "line": s["line"], "text": s["text"]}
                if o is not None and o["text"] != s["text"]:
                    out["old"] = o["text"]
                return out
        if cur.get("from_stage") and cur["base"] == pst["base"]:
            return {"kind": "base-stage", "ref": cur["base"]}
        if cur["image"] != pst["image"] or cur["base"] != pst["base"]:
            return {"kind": "base", "ref": cur["base"], "old": pst["image"], "new": cur["image"],
                    "old_ref": pst["base"]}
        return {"kind": "earlier", "line": 0, "text": f"FROM {cur['base']}"}


def _files_changes(old: dict | None, new: dict | None) -> list[dict]:
    old, new = old or {}, new or {}
    if old == new:      # one C-level pass: the usual case of a step that missed for another reason
        return []
    out = []
    # only the entries that differ, by a set difference of the two listings' items (C, not a
    # Python loop over 100,000 paths and a sort of them all; a later step's reason asks too)
    for path in sorted({p for p, _ in old.items() ^ new.items()}):
        a, b = old.get(path), new.get(path)
        if a is None:
            out.append({"path": path, "what": "added"})
        elif b is None:
            out.append({"path": path, "what": "removed"})
        else:  # "type mode uid:gid capability content" (SourceTree.digest's listing)
            ta, tb = a.split(" ", 4), b.split(" ", 4)
            what = []
            if ta[0] != tb[0] or ta[4:] != tb[4:]:
                what.append("content")
            if ta[3:4] != tb[3:4]:      # "capability[+user xattrs]"
                ca, _, xa = ta[3].partition("+")
                cb, _, xb = tb[3].partition("+")
                what += (["capability"] if ca != cb else []) + (["xattrs"] if xa != xb else [])
            if ta[1] != tb[1]:
                what.append("mode")
            if ta[2] != tb[2]:
                what.append("owner")
            out.append({"path": path, "what": ", ".join(what) or "content"})
    return out


def _env_changes(old: list, new: list, args: set[str]) -> list[dict]:
    a = dict(e.partition("=")[::2] for e in old)
    b = dict(e.partition("=")[::2] for e in new)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            kind = "epoch" if k == "SOURCE_DATE_EPOCH" else ("arg" if k in args else "env")
            out.append({"kind": kind, "name": k, "old": a.get(k), "new": b.get(k)})
    return out


def _input_changes(old: dict, new: dict, args: set[str]) -> list[dict]:
    oi, ni = old["inputs"], new["inputs"]
    out: list[dict] = []
    files = _files_changes(old.get("files"), new.get("files"))
    ignore_changed = old.get("ignore") != new.get("ignore")
    if files:
        out.append({"kind": "files", "changes": files, "dockerignore": ignore_changed})
    elif ignore_changed and oi.get("sources") != ni.get("sources"):
        out.append({"kind": "dockerignore"})
    env_done = False
    for k in sorted(set(oi) | set(ni)):
        if k == "sources" and (files or ignore_changed):
            continue
        if oi.get(k) == ni.get(k):
            continue
        if k == "sources":  # keyed by a stage's or image's key, a heredoc's or URL's content
            out.append({"kind": "sources"})
        elif k == "env":
            out.extend(_env_changes(oi.get(k) or [], ni.get(k) or [], args))
            env_done = True
        elif k == "epoch":
            if not env_done and not any(c["kind"] == "epoch" for c in out):
                out.append({"kind": "epoch", "name": "SOURCE_DATE_EPOCH", "old": oi.get(k),
                            "new": ni.get(k)})
        else:
            out.append({"kind": "input", "name": k, "old": oi.get(k), "new": ni.get(k)})
    seen, uniq = set(), []
    for c in out:  # the epoch shows in env and as its own input: say it once
        sig = json.dumps(c, sort_keys=True) if c["kind"] != "epoch" else "epoch"
        if sig not in seen:
            seen.add(sig)
            uniq.append(c)
    return uniq


def _short(v, width: int = 40) -> str:
    text = v if isinstance(v, str) else json.dumps(v)
    return text if len(text) <= width else text[:width - 1] + "…"


_WORDS = {  # the reasons said in one fixed sentence, filled from the reason's fields
    "first-build": "no earlier build of this Dockerfile and tag to compare with",
    "unreadable": "the record of the last build cannot be read",
    "new-stage": "stage {stage} is new",
    "new-step": "new step (line {line})",
    "base": "FROM: {ref} now points at {new}",
    "base-stage": "FROM {ref}: that stage changed",
    "gone": "same inputs as the last build: its cache entry is gone (pruned?)",
}


def describe(reason: dict, limit: int | None) -> str:
    """The reason in words; `limit`: at most that many files named (None: all)."""
    k = reason["kind"]
    if k in _WORDS:
        return _WORDS[k].format(**reason)
    if k == "line":
        return f"Dockerfile line {reason['line']} changed: {_short(reason['old'])} → {_short(reason['new'])}"
    if k == "earlier":
        if reason.get("old"):
            return f"an earlier step changed: {_short(reason['old'])} → {_short(reason['text'])}"
        return f"an earlier step changed: {_short(reason['text'], 60)}"
    parts = []
    for c in reason["changes"]:
        ck = c["kind"]
        if ck == "files":
            fs = c["changes"]
            shown = fs if limit is None else fs[:limit]
            text = ", ".join(f"{f['path']} ({f['what']})" for f in shown)
            if len(fs) > len(shown):
                text += f" and {len(fs) - len(shown)} more"
            n = len(fs)
            pre = ".dockerignore changed; " if c.get("dockerignore") else ""
            parts.append(f"{pre}{n} file{'s' if n != 1 else ''} changed: {text}")
        elif ck in ("arg", "env", "epoch"):
            word = {"arg": "ARG", "env": "ENV", "epoch": "epoch"}[ck]
            name = "SOURCE_DATE_EPOCH" if ck == "epoch" else c["name"]
            parts.append(f"{word} {name} {_short(c['old'] if c['old'] is not None else '(unset)')}"
                         f" → {_short(c['new'] if c['new'] is not None else '(unset)')}")
        elif ck == "dockerignore":
            parts.append(".dockerignore changed")
        elif ck == "sources":
            parts.append("what it copies changed (the stage or image it reads, or a heredoc)")
        else:
            parts.append(f"{c['name']} {_short(c['old'])} → {_short(c['new'])}")
    return "; ".join(parts)


def report(misses: list[tuple[str, str, dict]], stream) -> None:
    """`--explain-cache`: every missed step and its whole reason."""
    if not misses:
        stream.write("explain-cache: every step was cached\n")
        return
    stream.write(f"explain-cache: {len(misses)} step{'s' if len(misses) != 1 else ''} "
                 "missed the cache\n")
    for name, text, reason in misses:
        stream.write(f"  {name}\n")
        if reason["kind"] == "inputs":
            for c in reason["changes"]:
                if c["kind"] == "files":
                    if c.get("dockerignore"):
                        stream.write("    .dockerignore changed\n")
                    for f in c["changes"]:
                        stream.write(f"    {f['path']}: {f['what']}\n")
                else:
                    stream.write(f"    {describe({'kind': 'inputs', 'changes': [c]}, None)}\n")
        else:
            stream.write(f"    {text}\n")
    stream.flush()
