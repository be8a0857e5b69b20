"""The `synctalk` command: one subcommand per stage; the scripts/ shims call main() too."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand → (module that holds add_arguments/run, help); modules load only when used
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("synctalk.preprocess", "one video → dataset/<name>/ (frames, landmarks, audio features)"),
    "batch-preprocess": ("synctalk.batch", "preprocess many videos (folder, list file or JSON config)"),
    "status": ("synctalk.status", "show what is done for a person and what comes next"),
    "models": ("synctalk.models_command", "list or download model weights"),
    "train-syncnet": ("synctalk.training.commands.syncnet", "train the person's SyncNet (audio–mouth critic)"),
    "train-unet": ("synctalk.training.commands.unet", "train the person's UNet-328 (redraws the mouth from audio)"),
    "train": ("synctalk.training.commands.legacy",
              "the seed's flags: --train_syncnet → train-syncnet, otherwise train-unet"),
    "infer": ("synctalk.render", "render new speech into a lip-synced video of the person"),
    "eval": ("synctalk.evaluate", "render the held-out tail and score it against the real frames"),
    "serve": ("synctalk.serve.command", "live avatars over a WebSocket, renders and jobs, with a browser page"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the chosen subcommand's module is imported (top-level help imports none)."""
    parser = argparse.ArgumentParser(prog="synctalk", description="per-speaker talking-avatar training")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only == name:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and turn a SyncTalkError or a file-system error into a message and exit code 1."""
    from .errors import SyncTalkError, os_error_message

    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen if chosen in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except SyncTalkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # not a folder, not writable, name too long, disk full: the user can fix these
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
