"""Everything that touches the kernel: namespaces, mounts, overlayfs, the sandbox, containers."""
