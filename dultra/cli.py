"""The `dultra` command.

    dultra generate --model tiny --prompt "Compute ||||5 - 3| - 9| - 4| - 7|." --strategy planner --json
    dultra compare

Each subcommand lives in its own module under `dultra/commands/` and registers itself
through `register(subparsers)`. User mistakes (bad paths, bad settings) end with a one-line
`dultra: error: ...` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import signal
import sys

from dultra.errors import DultraError
from dultra.rl.stages import STAGES
from dultra.signals import Terminated, handling, raise_terminated

# Each subcommand: the module that registers it (imported only when the command is run) and
# its line in `dultra --help`, in the order listed there.
COMMANDS = {
    "generate": ("dultra.commands.generate", "decode a prompt"),
    "compare": ("dultra.commands.compare", "decode one prompt under every strategy"),
    **{name: ("dultra.commands.training", about.help) for name, about in STAGES.items()},
    "eval": ("dultra.commands.evaluate", "evaluate strategies on a task and write a report"),
    "publish": ("dultra.commands.publish", "upload a checkpoint as a new run and move `latest`"),
    "runs": ("dultra.commands.publish", "list the runs published under a prefix, newest first"),
    "pull": ("dultra.commands.publish", "download and verify a published checkpoint"),
    "sandbox": ("dultra.commands.sandbox", "the code-execution sandbox service"),
    "schedule": ("dultra.commands.schedule", "scheduled retraining: Kubeflow Pipelines recurring runs"),
}


def build_parser(command: str | None = None, *, every: bool = False) -> argparse.ArgumentParser:
    """The parser of `command`'s module only, or (`every`) of every subcommand's; without
    either, one that lists the subcommands without their options. A command's module may
    import torch and transformers (seconds): `dultra --help`, `dultra schedule` or
    `dultra publish` start without them."""
    parser = argparse.ArgumentParser(
        prog="dultra", description="Fast masked-diffusion LM decoding with a trained unmasking planner."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if every or command in COMMANDS:
        modules = [module for module, _ in COMMANDS.values()] if every else [COMMANDS[command][0]]
        for name in dict.fromkeys(modules):
            importlib.import_module(name).register(subparsers)
    else:  # for the listing and its errors (no or an unknown command) only
        for name, (_, about) in COMMANDS.items():
            subparsers.add_parser(name, help=about)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that an unknown option is reported by the subcommand it was given to,
    with its usage, and named with the subcommands that have it (`--group-size` to `pretrain`)."""
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    parser = build_parser(every=True)  # every subcommand, to name the ones that have the unknown options
    args, extras = parser.parse_known_args(argv)
    chosen, others = parser, {}
    while chosen._subparsers is not None:
        action = chosen._subparsers._group_actions[0]
        if getattr(args, action.dest, None) not in action.choices:
            break
        others = action.choices
        chosen = action.choices[getattr(args, action.dest)]
    hints = []
    for flag in (e.split("=", 1)[0] for e in extras if e.startswith("--")):
        owners = [sub.prog for sub in others.values() if sub is not chosen and flag in sub._option_string_actions]
        if owners:
            hints.append(f"{flag} is an option of {' / '.join(dict.fromkeys(owners))}")
    chosen.error(f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:  # decoding commands import torch and transformers: seconds in which Ctrl-C is likely
        parser = build_parser(argv[0] if argv else None)
    except KeyboardInterrupt:
        print("dultra: interrupted", file=sys.stderr)
        return 130
    args = parse(parser, argv)
    if not sys.stderr.isatty():  # keep logs and captured stderr free of progress-bar redraws
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read as huggingface_hub loads
        if (hf_logging := sys.modules.get("transformers.utils.logging")) is not None:  # loaded already
            hf_logging.disable_progress_bar()
    try:
        with handling((signal.SIGTERM,), raise_terminated):
            return args.run(args) or 0
    except DultraError as err:
        print(f"dultra: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        if not _reader_gone(sys.stdout):  # another pipe (a worker's, a socket): not the user's doing
            raise
        # `dultra runs ... | head`: stdout's reader has all it wanted; so the exit's flush has nowhere to fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as err:
        if err.filename is None:  # not about a path the user gave: keep the traceback
            raise
        # An unwritable --output-dir, a file where a directory belongs, ...: one line.
        print(f"dultra: error: {err.strerror or err}: {err.filename}", file=sys.stderr)
        return 2
    except Terminated:
        print("dultra: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("dultra: interrupted", file=sys.stderr)
        return 130


def _reader_gone(stream) -> bool:
    """True when `stream` is a pipe whose reading end is closed (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # closed, replaced, or no poll on this platform
        return False


if __name__ == "__main__":
    sys.exit(main())
