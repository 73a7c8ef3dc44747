"""A local Ray cluster for tests (``ray.init(num_cpus=2)``), started again once if its raylet
misses Ray's fixed 30 s start-up wait: a loaded CI machine saw that happen, and it says nothing
about the code under test."""

from __future__ import annotations

import ray

STARTS = 2


def start_local_ray() -> None:
    for attempt in range(STARTS):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            return
        except Exception as error:
            if "timed out during startup" not in str(error) or attempt + 1 == STARTS:
                raise
            ray.shutdown()
