"""The images a build or `run` starts from: taken from the store, pulled when missing (FROM,
COPY --from=<image>, `run`), or checked against the registry first (`--pull` / `--pull always`).
A reference by digest that the store has is never asked for again."""
from __future__ import annotations

from dataclasses import dataclass

PULL_POLICIES = ("missing", "always", "never")


@dataclass(frozen=True)
class PullOptions:
    policy: str = "missing"        # missing | always | never
    tls_verify: bool = True
    platform: str | None = None


def get_image(store, ref: str, opts: PullOptions = PullOptions(), progress=None):
    """The store's image `ref` names, pulling as `opts.policy` says; `progress` (a
    builder.transferview.TransferView) shows what a pull does. A StoreError says what is
    missing and why."""
    from cache import refs
    from cache.errors import StoreError

    if opts.policy != "always":  # the hot path: no registry code is imported for a local image
        try:
            return store.image(ref)
        except StoreError:
            if opts.policy == "never":
                raise
    try:
        refs.parse(ref)
    except StoreError:
        return store.image(ref)  # an image ID or prefix: only the store can know it
    from cache.registry.pull import ensure

    img, _pulled = ensure(store, ref, always=opts.policy == "always", platform=opts.platform,
                          tls_verify=opts.tls_verify, progress=progress)
    return img


def log_view(log):
    """A TransferView printing docker's plain pull lines through `log(line)`."""
    from builder.transferview import TransferView

    return TransferView("plain", _LineStream(log))


class _LineStream:
    """A text stream that hands each complete line to `log` (a build vertex's log)."""

    def __init__(self, log):
        self.log, self.buf = log, ""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self.buf += text
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            self.log(line)
        return len(text)

    def flush(self) -> None:
        pass
