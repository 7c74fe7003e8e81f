"""cache.atomic and cache.owner: whole files or none, one lock across processes, owners that
name one process (pid + start time), and replay records written through them."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import atomic, layout, owner, sealed

REPO = Path(__file__).resolve().parents[2]


def test_write_is_whole_or_not_at_all(tmp_path):
    dest = tmp_path / "f.json"
    atomic.write_json(dest, {"a": 1})
    assert json.loads(dest.read_text()) == {"a": 1} and dest.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic.replacing(dest) as f:
        f.write(b"half")
        raise RuntimeError("killed half-way")
    assert json.loads(dest.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temporary left
    atomic.write_file(dest, b"x", mode=0o600, tmp_dir=tmp_path)
    assert dest.read_bytes() == b"x" and dest.stat().st_mode & 0o777 == 0o600


def test_temporaries_name_their_owner(tmp_path):
    f, path = atomic.tmp_file(tmp_path, "ld")
    f.close()
    tok = owner.of_name(path.name)
    assert tok == owner.token() and tok.split(".")[0] == str(os.getpid())
    assert owner.alive(tok)
    pid, start = tok.split(".")
    assert not owner.alive(f"{pid}.{int(start) + 1}")  # same pid, another process: a reused pid
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                       text=True, check=True)
    assert not owner.alive(p.stdout.strip() + ".1")
    assert owner.of_name("garbage") is None and not owner.alive("x.y")
    z = subprocess.Popen(["true"])  # exits, and is not reaped until wait(): a zombie
    tok = f"{z.pid}.{owner.start_time(z.pid)}"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{z.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not owner.alive(tok)
    z.wait()


# the regex owner.of_name was before it was written out by hand (`\d`: any Unicode digit)
_NAME = re.compile(r"^[a-z]+-(\d+)(?:\.(\d+))?-")


def _of_name_by_regex(name: str) -> str | None:
    m = _NAME.match(name)
    if m is None:
        return None
    return m.group(1) if m.group(2) is None else f"{m.group(1)}.{m.group(2)}"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["scratch", "w", "A", "-", ".", "1", "42", "\u0663", "\u00b2", "x",
                                 "-ab", "\n", "_", " "]), max_size=10).map("".join))
def test_owner_of_name_agrees_with_its_regex(name):
    assert owner.of_name(name) == _of_name_by_regex(name)


def test_owner_of_name_reads_what_temp_name_writes():
    assert owner.of_name(owner.temp_name("scratch")) == owner.token()
    assert owner.of_name("w-12-x") == "12" and owner.of_name("w-12.34-") == "12.34"
    for bad in ("w-12", "w-12.-x", "w-.3-x", "W-1-x", "-1-x", "w--x", "w-1.2.3-x"):
        assert owner.of_name(bad) is None, bad


def _holder(lock_path: Path, seconds: float) -> subprocess.Popen:
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r})\nfrom cache import atomic\n"
            f"with atomic.Lock({str(lock_path)!r}).held():\n print('held', flush=True)\n"
            f" time.sleep({seconds})\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_is_exclusive_across_processes_and_reentrant(tmp_path):
    lock = atomic.Lock(tmp_path / "lock")
    with lock.held(), lock.held():
        pass  # re-entrant in one process
    p = _holder(tmp_path / "lock", 0.6)
    t = time.monotonic()
    with lock.held():
        waited = time.monotonic() - t
    p.wait(10)
    assert waited > 0.3


def test_lock_excludes_threads_and_survives_an_error_inside(tmp_path):
    """Two threads of one process: the second waits for the first (the flock is per process,
    the RLock is per thread); an exception inside `held` lets the lock go."""
    lock = atomic.Lock(tmp_path / "lock")
    assert atomic.Lock(str(tmp_path / "lock")) is lock  # one object per real path
    inside, order = threading.Event(), []

    def other():
        inside.wait(10)
        with lock.held():
            order.append("other")

    t = threading.Thread(target=other)
    t.start()
    with lock.held():
        inside.set()
        time.sleep(0.2)
        order.append("first")
    t.join(10)
    assert order == ["first", "other"]
    with pytest.raises(KeyError), lock.held():
        raise KeyError("x")
    p = _holder(tmp_path / "lock", 0)  # another process gets it: nothing was left held
    assert p.wait(10) == 0


def test_replay_record_is_written_under_the_store_lock(busybox_root, tmp_path):
    """A replay record waits for the store lock (a prune holding it sees the whole record or
    none), goes through tmp/ and leaves no temporary behind."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\n")
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom builder import replay\n"
            f"p = replay.Pending(replay.parse_argv(['build', {str(ctx)!r}]))\n"
            "p._write({'inputs': p.inputs})\nprint(p.path)\n")
    holder = _holder(busybox_root / layout.LOCK, 1.0)
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    waited = time.monotonic() - t
    holder.wait(10)
    assert r.returncode == 0, r.stderr
    assert waited > 0.5, "the record was written while another process held the store lock"
    record = Path(r.stdout.strip())
    assert record.parent == busybox_root / layout.REPLAY_DIR and sealed.loads(record.read_bytes())
    assert [p.name for p in record.parent.iterdir()] == [record.name]
    assert not any((busybox_root / layout.TMP_DIR).iterdir())


def test_a_replay_that_writes_nothing_loads_no_writer(busybox_root, tmp_path):
    """The replay's check path stays os/json/zlib + cache.layout: the writer is loaded only to
    write a record."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nENV A=1\n")
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom builder.cli import main\n"
            f"rc = main(['build', '-q', '-t', 'app', {str(ctx)!r}])\n"
            "print(rc, sorted(m for m in ('cache.atomic', 'cache.store', 'fcntl') if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
            for _ in range(2)]
    assert runs[0].stdout.splitlines()[-1].startswith("0 ['cache.atomic'"), runs[0].stderr
    assert runs[1].stdout.splitlines()[-1] == "0 []", runs[1].stderr


def test_sealed_files_never_hand_damaged_bytes_to_marshal():
    """cache.sealed: what a build's caches are written as reads back; a bit flipped, a cut, a
    foreign file or marshal's own bytes read as None - and at once: five unsealed bytes make
    marshal allocate 16 GB before it fails."""
    import time

    obj = {"v": 2, "files": {"/a": ((1, 2), "ff", "", "")}}
    raw = sealed.dumps(obj)
    assert sealed.loads(raw) == obj
    flipped = bytearray(raw)
    flipped[-3] ^= 1
    t = time.monotonic()
    for bad in (bytes(flipped), raw[:-1], raw + b"x", b"", b"{}", b"(\xff\xff\xff\x7f",
                sealed.MAGIC + (2**40).to_bytes(8, "little") + b"\0" * 4 + b"(\xff\xff\xff\x7f"):
        assert sealed.loads(bad) is None
    assert time.monotonic() - t < 1


def test_sync_tree_fsyncs_a_few_files_and_syncs_the_filesystem_for_many(tmp_path, monkeypatch):
    """A layer dir is on disk before it is renamed into the store: a few files by an fsync of
    each (and of each dir), which waits only for them; past SYNC_EACH, one syncfs."""
    from cache import atomic

    small, big = tmp_path / "small", tmp_path / "big"
    (small / "d").mkdir(parents=True)
    (small / "a").write_text("a")
    (small / "d" / "b").write_text("b")
    os.symlink("a", small / "link")
    os.mkfifo(small / "fifo")       # never opened: an fsync would wait for a writer
    big.mkdir()
    for i in range(atomic.SYNC_EACH + 1):
        (big / str(i)).write_text("x")
    fsyncs, syncfs = [], []
    real_fsync = os.fsync

    def count(fd):
        fsyncs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)
    monkeypatch.setattr(atomic.os, "fsync", count)
    real_syncfs = atomic._syncfs
    monkeypatch.setattr(atomic, "_syncfs", lambda p: (syncfs.append(str(p)), real_syncfs(p)))
    atomic.sync_tree(small)
    assert sorted(fsyncs) == sorted(str(p) for p in (small, small / "d", small / "a",
                                                     small / "d" / "b"))
    assert syncfs == []
    fsyncs.clear()
    atomic.sync_tree(big)
    assert fsyncs == [] and syncfs == [str(big)]
