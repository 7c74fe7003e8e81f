"""docker's cli/command/formatter: the tables and `--format` output of ps, images, stats,
history and system df, in one place.

`table(rows)` is text/tabwriter as docker sets it up (min width 10, padding 3, a line's last
cell unpadded). `render(fmt, rows, headers, context)` is formatter.Context: `\\t`/`\\n` in the
format unescaped, one line per row, and for `table ...` a header row (each field's title from
`headers`) aligned with the rows by `table`. A row is a Go struct: the fields named in
`headers` and the method `{{.Label "key"}}` (its `_labels`), so an unknown field fails as Go's
"can't evaluate field X in type *formatter.<context>"; the template is Go's
(builder.gotemplate). `go_time` is Go's time.Time.String().
"""
from __future__ import annotations

import time


def table(rows: list[list[str]], minwidth: int = 10) -> str:
    """text/tabwriter as docker sets it up: min width 10, padding 3, a line's last cell unpadded
    (rows may differ in length: a column is as wide as the rows that have it after it)."""
    n = max(len(r) for r in rows)
    widths = [max([minwidth] + [len(r[i]) + 3 for r in rows if len(r) > i + 1])
              for i in range(n - 1)]
    return "".join("".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False))
                   + r[-1] + "\n" for r in rows)


def go_time(t: float) -> str:
    """Go's time.Time.String() in local time: `2026-12-02 02:15:25 +0000 UTC`."""
    lt = time.localtime(int(t))
    return time.strftime("%Y-%m-%d %H:%M:%S %z ", lt) + (lt.tm_zone or "")


def render(fmt: str, rows: list[dict], headers: dict, context: str) -> str:
    """The rows (dicts of `headers`' fields, `_labels` for .Label) as `fmt` says."""
    from builder import gotemplate
    from builder.errors import BuildError

    is_table = fmt.startswith("table")
    body = (fmt[len("table"):] if is_table else fmt).strip(" ")
    body = body.replace("\\t", "\t").replace("\\n", "\n")
    strict = (set(headers) | {"Label"}, f"*formatter.{context}")

    def one(values: dict | None) -> str:
        if values is None:          # the header row: each field is its column's title
            data = {**headers, "Label": lambda name: "LABEL " + name}
        else:
            # docker marshals a row's {{json .}} through a map: keys in sorted order
            data = {k: values[k] for k in sorted(values) if not k.startswith("_")}
            data["Label"] = lambda name: (values.get("_labels") or {}).get(name, "")
        try:
            return gotemplate.render(body, data, strict=strict)
        except gotemplate.TemplateError as e:
            raise BuildError(str(e)) from None

    lines = [one(r) for r in rows]
    if not is_table:
        return "".join(ln + "\n" for ln in lines)
    lines.insert(0, one(None))
    text = "\n".join(lines)
    return table([ln.split("\t") for ln in text.split("\n")])
