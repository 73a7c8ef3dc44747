"""The ``vizdex`` command line: one parser, subcommands registered by ``vizdex.cli`` modules."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vizdex.cli import COMMAND_MODULES
from vizdex.cli.options import command_env
from vizdex.core.env import data_dir_from_env
from vizdex.core.errors import VizdexError, os_error_text, storage_error


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr like every other error (the README's
    promise); the usage itself is what ``--help`` is for. Subcommands' parsers are of this class
    too (argparse makes them of the parent's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vizdex",
        description="Self-hosted image search: ingest collections, search by text or by image.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True
    for module in COMMAND_MODULES:
        module.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # Libraries' warnings (Pillow's "Corrupt EXIF data" on a damaged file, printed with its
    # source line) went to stderr beside the one-line error: they are log records now, shown
    # with --verbose.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        return int(args.handler(args))
    except VizdexError as error:
        # One line a person understands; the traceback only with --verbose.
        return _fail(args, f"error: {error.message}", 2)
    except KeyboardInterrupt:
        print("vizdex: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a full disk, a read-only or missing directory, permissions
        storage = storage_error(error, _data_dir(args))
        return _fail(args, f"error: {storage.message if storage else os_error_text(error)}", 1)
    except Exception as error:  # a bug: still one line, the traceback with --verbose
        storage = storage_error(error, _data_dir(args))  # SQLite's "disk is full", "readonly"
        if storage is not None:
            return _fail(args, f"error: {storage.message}", 1)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text = f"internal error: {type(error).__name__}: {first} (--verbose shows the traceback)"
        return _fail(args, text, 1)


def _data_dir(args: argparse.Namespace) -> Path:
    return data_dir_from_env(command_env(args))


def _fail(args: argparse.Namespace, text: str, code: int) -> int:
    if args.verbose:
        traceback.print_exc(file=sys.stderr)
    print(f"vizdex: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
