"""runtime.users: the one passwd/group parser, and docker's -u forms resolved with it."""
from __future__ import annotations

from runtime import users


def test_parse_table_skips_blank_and_comment_lines_and_keeps_odd_bytes():
    data = (b"root:x:0:0:root:/root:/bin/sh\n\n  # comment\n"
            b"  app:x:1000:1000::/home/app:/bin/sh  \n\xff:x:7:7\n")
    rows = users.parse_table(data)
    assert rows[:2] == [["root", "x", "0", "0", "root", "/root", "/bin/sh"],
                        ["app", "x", "1000", "1000", "", "/home/app", "/bin/sh"]]
    assert rows[2][0].encode("utf-8", "surrogateescape") == b"\xff" and len(rows) == 3


def test_resolve_reads_the_files_through_it(tmp_path):
    (tmp_path / "passwd").write_bytes(b"# users\napp:x:1000:1500::/home/app:/bin/sh\n")
    (tmp_path / "group").write_bytes(b"staff:x:50:app,other\n\n")
    got = users.resolve("app", str(tmp_path / "passwd"), str(tmp_path / "group"))
    assert (got.uid, got.gid, got.sgids, got.home) == (1000, 1500, [50], "/home/app")   # RUN's
    got = users.resolve("app", str(tmp_path / "passwd"), str(tmp_path / "group"), with_gid=True)
    assert got.sgids == [1500, 50]                              # docker run/exec: the gid first
