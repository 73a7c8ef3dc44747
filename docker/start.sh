#!/bin/sh
# start.sh -- the image's command: bring the catalog schema up to date, then serve.
#
# `vizdex serve` refuses a catalog whose schema is older than this vizdex; upgrading first lets a
# new image start on the data volume of an old one (back the volume up before upgrading images).
# exec: the server replaces this shell, so it receives `docker stop`'s SIGTERM and shuts down
# gracefully. It listens on all interfaces: inside a container, 127.0.0.1 is unreachable from the
# host; publish the port (and configure API keys) to decide who can reach it.
set -eu

vizdex db upgrade
exec vizdex serve --host 0.0.0.0 --port "${VIZDEX_PORT:-8000}"
