"""pybuild's version, the one place it is written: in the lowest package, so every layer can
say it (the CLI's --version, the registry client's User-Agent, the package metadata)."""

VERSION = "0.1.0"
