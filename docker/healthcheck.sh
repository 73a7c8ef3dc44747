#!/bin/sh
# healthcheck.sh -- the image's HEALTHCHECK: exit 0 only when GET /health/ready answers 200.
#
# Python's urllib rather than curl, so the check needs nothing the image does not already have.
# Proxies are ignored on purpose: the check talks to this machine, never through HTTP(S)_PROXY.
set -eu

exec python3 - "http://127.0.0.1:${VIZDEX_PORT:-8000}/health/ready" <<'PY'
import sys
import urllib.request

opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # 503 while starting, refused connection, timeout
    print(f"not ready: {sys.argv[1]}: {error}", file=sys.stderr)
    sys.exit(1)
PY
