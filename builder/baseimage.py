"""The images a build or `run` starts from: taken from the store, pulled when missing (FROM,
COPY --from=<image>, `run`), or checked against the registry first (`--pull` / `--pull always`).
A reference by digest that the store has is never asked for again."""
from __future__ import annotations

from dataclasses import dataclass

PULL_POLICIES = ("missing", "always", "never")


@dataclass(frozen=True)
class PullOptions:
    """How FROM and --from images come from a registry (--pull, --tls-verify)."""

    policy: str = "missing"        # missing | always | never
    tls_verify: bool = True
    platform: str | None = None


def get_image(store, ref: str, opts: PullOptions = PullOptions(), progress=None):
    """The store's image `ref` names, pulling as `opts.policy` says; `progress` (a
    builder.transferview.TransferView) shows what a pull does. A StoreError says what is
    missing and why, and names a stored image the reference may have meant to type."""
    from cache.errors import StoreError

    try:
        return _get_image(store, ref, opts, progress)
    except StoreError as e:
        near = nearest_local(store, ref) if opts.policy != "always" else None
        if near is None:
            raise
        raise StoreError(f"{e} (did you mean {near!r}, which is in the store?)") from None


def _get_image(store, ref: str, opts: PullOptions, progress):
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


def nearest_local(store, ref: str) -> str | None:
    """The store's name most like `ref` (a typo such as `busybx` for `busybox`), compared by
    repository; with `ref`'s tag when the store has it, else one it has. None when nothing is
    close."""
    import difflib

    from cache import refs
    from cache.errors import StoreError

    tags: dict[str, list[str]] = {}
    for full in sorted(store.tags()):
        repo, tag = refs.split_tag(full)
        tags.setdefault(refs.familiar_repo(repo), []).append(tag)
    try:
        repo, tag, _ = refs.parse(ref)
    except StoreError:
        return None                 # an ID or a bad name: nothing to compare
    near = difflib.get_close_matches(refs.familiar_repo(repo), sorted(tags), n=1, cutoff=0.8)
    if not near:
        return None
    have = tags[near[0]]
    return f"{near[0]}:{tag if tag in have else have[0]}"


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
