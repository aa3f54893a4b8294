"""The `dultra` command.

    dultra generate --model tiny --prompt "Compute 6 - 4 + 1 + 5 - 8." --strategy planner --json
    dultra compare

Each subcommand lives in its own module under `dultra/commands/` and registers itself
through `register(subparsers)`. User mistakes (bad paths, bad settings) end with a one-line
`dultra: error: ...` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from transformers.utils import logging as hf_logging

from dultra.errors import DultraError

# Subcommand modules, in the order `dultra --help` lists them.
COMMANDS = (
    "dultra.commands.generate",
    "dultra.commands.compare",
    "dultra.commands.training",
    "dultra.commands.evaluate",
    "dultra.commands.publish",
    "dultra.commands.sandbox",
    "dultra.commands.schedule",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dultra", description="Fast masked-diffusion LM decoding with a trained unmasking planner."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not sys.stderr.isatty():  # keep logs and captured stderr free of progress-bar redraws
        hf_logging.disable_progress_bar()
    try:
        return args.run(args) or 0
    except DultraError as err:
        print(f"dultra: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename is None:  # not about a path the user gave: keep the traceback
            raise
        # An unwritable --output-dir, a file where a directory belongs, ...: one line.
        print(f"dultra: error: {err.strerror or err}: {err.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dultra: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
