"""Mutation testing of the core modules: do their own tests notice when the code is broken?

Each mutant is one small change to one module (cosmic-ray's operators: ``+`` to ``-``, ``<`` to
``<=``, a number off by one, a condition negated, an ``except`` that never matches, ...). The
module's own tests run against it (``-p no:randomly -x``, nothing else); a failing run kills the
mutant, a passing one lets it survive. Survivors are places where the tests would not notice a
bug. Not a CI check (too slow); the README's Development section keeps the last result.

    python -m benchmarks.mutation --every 16 --jobs 2          # a sample: ~1/16 of the mutants
    python -m benchmarks.mutation --every 16 --modules search/service.py
    python -m benchmarks.mutation --every 16 --survivors      # only the last report's survivors
    python -m benchmarks.mutation --every 16 --list           # the sample, without running it

Mutants known to change nothing observable are listed in ``benchmarks/mutation_equivalents.toml``
with a reason; they are reported apart and left out of the kill rate. The report (kill rate per
module and overall, each survivor with file:line and its change) goes to
``benchmarks/.cache/mutation/``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.mutants import (
    Change,
    Mutant,
    enumerate_mutants,
    equivalent_reason,
    every_nth,
    load_equivalents,
    make,
)
from benchmarks.mutation_runs import Outcome, Run, make_slots, preload, run_all

ROOT = Path(__file__).resolve().parent.parent
# Not benchmarks.common.CACHE: importing that module loads ``tests`` in the parent.
FOLDER = Path(__file__).parent / ".cache" / "mutation"
EQUIVALENTS = Path(__file__).parent / "mutation_equivalents.toml"

DOOR_TESTS = ("tests/unit/test_image_door.py", "tests/unit/test_image_damage.py")
PREPROCESS_TESTS = ("tests/unit/test_preprocess.py", "tests/unit/test_device_path_units.py")
CATALOG_TESTS = ("tests/unit/test_catalog.py", "tests/integration/test_catalog_concurrency.py")
INDEX_STORE_TESTS = ("tests/integration/test_index_store.py",)
SERVICE_TESTS = ("tests/integration/test_search_service.py",)
BATCHING_TESTS = ("tests/unit/test_batching.py",)

# Each core module and the tests that are its own: the area, then the test files.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "vizdex/imaging/formats.py": ("image door", DOOR_TESTS),
    "vizdex/imaging/decode.py": ("image door", DOOR_TESTS),
    "vizdex/imaging/jpeg.py": ("image door", DOOR_TESTS[::-1]),
    "vizdex/imaging/pixels.py": ("image door", DOOR_TESTS),
    "encoders/preprocess.py": ("preprocessing", PREPROCESS_TESTS),
    "search/catalog/session.py": ("catalog writes", CATALOG_TESTS),
    "search/catalog/images.py": ("catalog writes", CATALOG_TESTS),
    "search/index_store.py": ("index store", INDEX_STORE_TESTS),
    "search/index_slot.py": ("index store", INDEX_STORE_TESTS),
    "search/index_replay.py": ("index store", INDEX_STORE_TESTS),
    "search/service.py": ("search service", SERVICE_TESTS),
    "search/ranking.py": ("search service", SERVICE_TESTS),
    "encoders/batching.py": ("micro-batching", BATCHING_TESTS),
    "encoders/batched_encoder.py": ("micro-batching", BATCHING_TESTS),
}


@dataclass(frozen=True)
class Result:
    module: str
    area: str
    line: int
    operator: str
    occurrence: int
    before: str
    after: str
    outcome: str  # killed, timeout, survived, equivalent
    seconds: float
    killed_by: str = ""
    reason: str = ""

    @property
    def counts_as_killed(self) -> bool:
        return self.outcome in ("killed", "timeout")


def _pick_modules(wanted: list[str] | None) -> list[str]:
    if not wanted:
        return list(MODULES)
    picked = [
        module
        for module, (area, _tests) in MODULES.items()
        if any(module.endswith(name) or area == name for name in wanted)
    ]
    if not picked:
        raise SystemExit(f"no core module matches {wanted}; known: {', '.join(MODULES)}")
    return picked


def _previous_survivors() -> set[tuple[str, str, str, str]]:
    latest = FOLDER / "latest.json"
    if not latest.exists():
        raise SystemExit(f"--survivors needs an earlier report: {latest} is missing")
    results = json.loads(latest.read_text())["results"]
    return {
        (row["module"], row["operator"], row["before"], row["after"])
        for row in results
        if row["outcome"] == "survived"
    }


def _merged_into_latest(rerun: list[Result]) -> list[Result]:
    """The last full report with the rerun survivors' new outcomes in place of the old ones."""
    previous = json.loads((FOLDER / "latest.json").read_text())["results"]
    fresh = {(r.module, r.operator, r.before, r.after): r for r in rerun}
    merged = []
    for row in previous:
        key = (row["module"], row["operator"], row["before"], row["after"])
        merged.append(fresh.pop(key) if key in fresh else Result(**row))
    return merged + list(fresh.values())


def _killed_by(log: Path) -> str:
    """The first failing test (or collection error) named in pytest's summary."""
    if not log.exists():
        return ""
    text = log.read_text(errors="replace")
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
    return found.group(1) if found else ""


def _baseline(
    test_sets: list[tuple[str, ...]], slots: list[Path], jobs: int
) -> dict[tuple[str, ...], float]:
    """Run each set of tests unmutated, cold then warm: they must pass, and the warm time (as a
    mutant's run will be: the cold one is mostly imports) sets each mutant's time limit."""
    seconds: dict[tuple[str, ...], float] = {}
    failed: list[str] = []

    def record(run: Run, outcome: Outcome) -> None:
        seconds[run.tests] = outcome.seconds
        print(f"{run.key} {' '.join(run.tests)}: {outcome.seconds:.1f} s", flush=True)
        if not outcome.passed:
            failed.append(f"{' '.join(run.tests)} (see {outcome.log})")

    for stage in ("cold", "warm"):
        runs = [Run(f"{stage}-{index}", {}, tests, 1800.0) for index, tests in enumerate(test_sets)]
        run_all(runs, slots[:jobs], FOLDER / "logs", record, collect_modules=stage == "cold")
        if failed:
            raise SystemExit("the unmutated tests fail, fix them first: " + "; ".join(failed))
        if stage == "cold":
            loaded = preload(sorted((FOLDER / "logs").glob("cold-*.modules.json")))
            print(f"preloaded {loaded} modules for the forks", flush=True)
    return seconds


def _report(results: list[Result], header: dict[str, object]) -> str:
    lines = [
        "# Mutation testing",
        "",
        f"- date: {header['date']}, commit {header['commit']}",
        f"- command: `{header['command']}`",
        f"- {header['mutants']} mutants sampled of {header['total']}; wall time {header['wall']}"
        + (" (the last report's survivors rerun, merged into it)" if header["survivors"] else ""),
        "",
        "| area | module | mutants | killed | survived | equivalent | kill rate |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label: str, module: str, rows: list[Result]) -> str:
        counted = Counter(
            "killed" if result.counts_as_killed else result.outcome for result in rows
        )
        judged = counted["killed"] + counted["survived"]
        rate = f"{100 * counted['killed'] / judged:.1f} %" if judged else "-"
        return (
            f"| {label} | {module} | {len(rows)} | {counted['killed']} | {counted['survived']}"
            f" | {counted['equivalent']} | {rate} |"
        )

    for module in dict.fromkeys(result.module for result in results):
        rows = [result for result in results if result.module == module]
        lines.append(row(rows[0].area, f"`{module}`", rows))
    for area in dict.fromkeys(result.area for result in results):
        lines.append(row(f"**{area}**", "all", [r for r in results if r.area == area]))
    lines.append(row("**overall**", "", results))
    for outcome, title in (("survived", "Survivors"), ("equivalent", "Equivalent mutants")):
        chosen = [result for result in results if result.outcome == outcome]
        lines += ["", f"## {title} ({len(chosen)})", ""]
        for result in chosen:
            why = f" — {result.reason}" if result.reason else ""
            lines.append(
                f"- `{result.module}:{result.line}` {result.operator}: "
                f"`{result.before}` → `{result.after}`{why}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=16, help="take every Nth mutant per module")
    parser.add_argument("--offset", type=int, default=0, help="start the sample at this index")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--modules", nargs="*", help="module paths (or areas) to mutate")
    parser.add_argument("--survivors", action="store_true", help="only the last run's survivors")
    parser.add_argument("--list", action="store_true", help="print the sample and stop")
    args = parser.parse_args()
    started = time.monotonic()
    FOLDER.mkdir(parents=True, exist_ok=True)
    equivalents = load_equivalents(EQUIVALENTS)
    keep = _previous_survivors() if args.survivors else None

    total = 0
    planned: list[tuple[Mutant, Change]] = []
    skipped_invalid = 0
    for module in _pick_modules(args.modules):
        every = enumerate_mutants(ROOT, module)
        total += len(every)
        for mutant in every_nth(every, args.every, args.offset):
            change = make(ROOT, mutant)
            if change is None:
                skipped_invalid += 1
                continue
            if keep is None or (module, mutant.short_operator, change.before, change.after) in keep:
                planned.append((mutant, change))
    print(
        f"{len(planned)} mutants to test ({total} in these modules, every {args.every}th;"
        f" {skipped_invalid} sampled ones are not valid Python and are left out)",
        flush=True,
    )
    if args.list:
        for mutant, change in planned:
            print(f"{mutant.module}:{change.line} {mutant.short_operator}: {change.after}")
        return

    slots = make_slots(ROOT, FOLDER / "slots", args.jobs)
    test_sets = sorted({MODULES[mutant.module][1] for mutant, _change in planned})
    # A mutant that makes a test wait forever is stopped at 4x the warm baseline (and counts
    # as killed: the change was noticed, as a hang).
    baseline = _baseline(test_sets, slots, args.jobs)
    limits = {tests: 4 * seconds + 20 for tests, seconds in baseline.items()}

    results: list[Result] = []
    runs: list[Run] = []
    by_key: dict[str, tuple[Mutant, Change]] = {}
    for index, (mutant, change) in enumerate(planned):
        area, tests = MODULES[mutant.module]
        reason = equivalent_reason(equivalents, mutant.module, change)
        if reason is not None:
            results.append(
                Result(
                    mutant.module,
                    area,
                    change.line,
                    mutant.short_operator,
                    mutant.occurrence,
                    change.before,
                    change.after,
                    "equivalent",
                    0.0,
                    reason=reason,
                )
            )
            continue
        key = f"mutant-{index:04d}"
        by_key[key] = (mutant, change)
        runs.append(Run(key, {mutant.module: change.source}, tests, limits[tests]))

    def record(run: Run, outcome: Outcome) -> None:
        mutant, change = by_key[run.key]
        verdict = "timeout" if outcome.timed_out else "survived" if outcome.passed else "killed"
        result = Result(
            mutant.module,
            MODULES[mutant.module][0],
            change.line,
            mutant.short_operator,
            mutant.occurrence,
            change.before,
            change.after,
            verdict,
            round(outcome.seconds, 1),
            killed_by=_killed_by(outcome.log) if verdict == "killed" else "",
        )
        results.append(result)
        done = sum(1 for row in results if row.outcome != "equivalent")
        print(
            f"[{done}/{len(runs)}] {verdict:8} {mutant.module}:{change.line} "
            f"{mutant.short_operator} ({outcome.seconds:.1f} s)",
            flush=True,
        )

    run_all(runs, slots, FOLDER / "logs", record)

    if args.survivors:
        results = _merged_into_latest(results)
    order = {module: index for index, module in enumerate(MODULES)}
    results.sort(key=lambda result: (order[result.module], result.line, result.operator))
    wall = time.monotonic() - started
    header: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "command": "python -m benchmarks.mutation " + " ".join(sys.argv[1:]),
        "mutants": len(results),
        "total": total,
        "wall": f"{wall / 60:.1f} min with --jobs {args.jobs}",
        "survivors": args.survivors,
    }
    report = _report(results, header)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (FOLDER / f"report-{stamp}.md").write_text(report)
    data = {"header": header, "results": [asdict(result) for result in results]}
    (FOLDER / f"report-{stamp}.json").write_text(json.dumps(data, indent=1))
    shutil.copyfile(FOLDER / f"report-{stamp}.json", FOLDER / "latest.json")
    shutil.copyfile(FOLDER / f"report-{stamp}.md", FOLDER / "latest.md")
    print(report)
    print(f"report: {FOLDER / f'report-{stamp}.md'}")


def _commit() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
