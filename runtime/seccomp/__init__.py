"""Seccomp, as docker applies it: `policy` (the run path: --security-opt, the cached BPF
program, the load), `profile` (docker's JSON profile format compiled, on a cache miss),
`libseccomp` (the ctypes binding `profile` uses) and `default.json` (moby's default profile;
see NOTICE). Nothing is imported here, so loading `policy` loads neither of the others."""
