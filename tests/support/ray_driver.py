"""``python -m tests.support.ray_driver ARGS…``: the ``vizdex`` command line as a Ray driver that
starts its own local cluster (``ray.init(num_cpus=2)``), so ``--ray auto`` joins it.

With ``VIZDEX_TEST_HOLD_AFTER_COMMIT=FILE`` the driver stops for good right after its first batch
is committed (``Catalog.add_images`` for an ingest, ``Catalog.put_embeddings`` for a back-fill
returned): it writes FILE and its writing thread waits there, so a test can SIGKILL it at that
known point instead of polling for a lucky moment.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOLD = "VIZDEX_TEST_HOLD_AFTER_COMMIT"


def _hold_after(method: Callable[..., Any], marker: Path) -> Callable[..., Any]:
    def held(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)  # committed: every catalog method is one transaction
        marker.write_text("committed\n")
        threading.Event().wait()  # until the test kills this process
        return result

    return held


def main() -> int:
    import ray

    from tests.support.local_ray import start_local_ray
    from vizdex.cli.main import main as vizdex
    from vizdex.search import Catalog

    marker = os.environ.get(HOLD)
    if marker:
        for name in ("add_images", "put_embeddings"):
            setattr(Catalog, name, _hold_after(getattr(Catalog, name), Path(marker)))
    start_local_ray()
    try:
        return vizdex(sys.argv[1:])
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
