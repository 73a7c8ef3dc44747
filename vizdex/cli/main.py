"""The ``vizdex`` command line: one parser, subcommands registered by ``web.commands`` modules."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vizdex.cli import COMMAND_MODULES
from vizdex.core.errors import VizdexError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    try:
        return int(args.handler(args))
    except VizdexError as error:
        # One line a person understands; the traceback only with --verbose.
        if args.verbose:
            logging.exception("command failed")
        print(f"vizdex: error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vizdex: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
