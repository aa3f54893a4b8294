"""Subcommands of the `dultra` CLI, one module each (see dultra/cli.py)."""
