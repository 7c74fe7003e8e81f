"""Dockerfile text -> typed AST; the BuildKit word lexer; .dockerignore matching. Pure, no I/O."""
