"""Parse a generated 2,000-instruction Dockerfile N times; print the median wall time (target < 100 ms).

Usage: python3 bench/parse_bench.py [N]   (run from the repo root)
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grammar

LINES = [
    "RUN apt-get update && apt-get install -y curl \\\n    && rm -rf /var/lib/apt/lists/*",
    'COPY --chown=app:app --chmod=0644 src/{i} /app/{i}',
    'ENV K{i}=v{i} PATH="/opt/{i}/bin:$PATH"',
    'LABEL org.example.n{i}="value {i}"',
    "RUN --mount=type=cache,target=/root/.cache pip install pkg{i}",
    'CMD ["python3", "-m", "app{i}"]',
    "WORKDIR /w/{i}",
    "ARG A{i}=default{i}",
    "EXPOSE {i}/tcp",
    "COPY <<EOF /etc/f{i}\nline one\nline two\nEOF",
]


def generate(n: int = 2000) -> str:
    """A Dockerfile with ``n`` instructions (FROM plus a mix of the common ones)."""
    out = ["# syntax=docker/dockerfile:1", "FROM alpine:3.19 AS base"]
    for i in range(n - 1):
        out.append(LINES[i % len(LINES)].format(i=i + 1))
    return "\n".join(out) + "\n"


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    text = generate()
    t0 = time.perf_counter()
    df = grammar.parse(text)
    first = (time.perf_counter() - t0) * 1000
    assert len(df.instructions) == 2000
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        grammar.parse(text)
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    grammar.validate(df)
    val = (time.perf_counter() - t0) * 1000
    print(f"parse 2000 instructions: median {statistics.median(times):.1f} ms over {runs} runs "
          f"(first call incl. grammar compile {first:.1f} ms); validate {val:.1f} ms")


if __name__ == "__main__":
    main()
