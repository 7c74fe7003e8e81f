"""pybuild's build side: the CLI, planning a Dockerfile into steps, and solving them."""
