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

Mutants known to change nothing observable, or to differ only on a CUDA device, are listed in
``benchmarks/mutation_equivalents.toml`` with a reason; they are reported apart, not run, and
left out of the kill rate. The report (kill rate per module and overall, each survivor with
file:line and its change) goes to ``benchmarks/.cache/mutation/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import signal
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
    every_nth,
    known_as,
    load_known,
    make,
)
from benchmarks.mutation_runs import Outcome, Run, make_slots, preload, run_all

ROOT = Path(__file__).resolve().parent.parent
# Not benchmarks.common.CACHE: importing that module loads ``tests`` in the parent.
FOLDER = Path(__file__).parent / ".cache" / "mutation"
KNOWN = Path(__file__).parent / "mutation_equivalents.toml"

DOOR_TESTS = (
    "tests/unit/test_image_door.py",
    "tests/unit/test_image_damage.py",
    "tests/unit/test_jpeg_structure.py",
)
PREPROCESS_TESTS = ("tests/unit/test_preprocess.py", "tests/unit/test_device_path_units.py")
CATALOG_TESTS = (
    "tests/unit/test_catalog.py",
    "tests/integration/test_catalog_concurrency.py",
    # Only its catalog-level test: the file's others run ingestion jobs and the HTTP API.
    "tests/integration/test_precision_catalog.py"
    "::test_the_catalog_records_precisions_and_refuses_what_cannot_mix",
)
# index_slot.py's compressed snapshots (index file + exact-vector file) are tested there.
INDEX_STORE_TESTS = (
    "tests/integration/test_index_store.py",
    "tests/integration/test_compressed_store.py",
)
SERVICE_TESTS = ("tests/integration/test_search_service.py",)
BATCHING_TESTS = ("tests/unit/test_batching.py",)
# Left out of mutant runs: each case starts a fresh interpreter that imports torch (~30 s, far
# more than the rest of the door's tests), to measure peak memory. The refusals it relies on are
# asserted in-process too (test_either_orientation_beyond_the_limit_is_refused,
# test_bombs_stay_within_memory_bounds).
DESELECT = ("--deselect", "tests/unit/test_image_damage.py::test_peak_memory_per_image_is_bounded")
# A mutant that makes one test hang (a lock never released, a search loop that never ends) fails
# that test after this long instead of holding the whole run until its 4x-baseline limit. Far
# above any one test's time on the unmutated code, even on a busy machine.
HANG_S = ("--timeout", "180")

# Each core module and the tests that are its own: the area, then the test files.
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "vizdex/imaging/formats.py": ("image door", DOOR_TESTS),
    "vizdex/imaging/decode.py": ("image door", DOOR_TESTS),
    "vizdex/imaging/jpeg.py": ("image door", DOOR_TESTS[::-1]),  # its own file first: -x
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
    outcome: str  # killed, timeout, survived, equivalent, cuda-only
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
        tests = test_sets[int(run.key.split("-")[1])]
        seconds[tests] = outcome.seconds
        print(f"{run.key} {' '.join(tests)}: {outcome.seconds:.1f} s", flush=True)
        if not outcome.passed:
            failed.append(f"{' '.join(tests)} (see {outcome.log})")

    for stage in ("cold", "warm"):
        runs = [
            Run(f"{stage}-{index}", {}, (*tests, *DESELECT), 1800.0)
            for index, tests in enumerate(test_sets)
        ]
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
        "| area | module | mutants | killed | survived | equivalent | CUDA only | kill rate |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, module: str, rows: list[Result]) -> str:
        counted = Counter(
            "killed" if result.counts_as_killed else result.outcome for result in rows
        )
        judged = counted["killed"] + counted["survived"]
        rate = f"{100 * counted['killed'] / judged:.1f} %" if judged else "-"
        return (
            f"| {label} | {module} | {len(rows)} | {counted['killed']} | {counted['survived']}"
            f" | {counted['equivalent']} | {counted['cuda-only']} | {rate} |"
        )

    for module in dict.fromkeys(result.module for result in results):
        rows = [result for result in results if result.module == module]
        lines.append(row(rows[0].area, f"`{module}`", rows))
    for area in dict.fromkeys(result.area for result in results):
        lines.append(row(f"**{area}**", "all", [r for r in results if r.area == area]))
    lines.append(row("**overall**", "", results))
    sections = (
        ("survived", "Survivors"),
        ("equivalent", "Equivalent mutants"),
        ("cuda-only", "Mutants only a CUDA device tells apart (killed by the GPU tests)"),
    )
    for outcome, title in sections:
        chosen = [result for result in results if result.outcome == outcome]
        lines += ["", f"## {title} ({len(chosen)})", ""]
        for result in chosen:
            why = f" — {result.reason}" if result.reason else ""
            lines.append(
                f"- `{result.module}:{result.line}` {result.operator}: "
                f"`{result.before}` → `{result.after}`{why}"
            )
    return "\n".join(lines) + "\n"


def _plan(args: argparse.Namespace) -> tuple[list[tuple[Mutant, Change]], int]:
    """The sampled mutants that make valid Python (only earlier survivors with --survivors),
    and how many mutants the chosen modules have in all."""
    keep = _previous_survivors() if args.survivors else None
    total, invalid = 0, 0
    planned: list[tuple[Mutant, Change]] = []
    for module in _pick_modules(args.modules):
        every = enumerate_mutants(ROOT, module)
        total += len(every)
        for mutant in every_nth(every, args.every, args.offset):
            change = make(ROOT, mutant)
            if change is None:
                invalid += 1
            elif keep is None or _key(mutant.module, mutant.short_operator, change) in keep:
                planned.append((mutant, change))
    print(
        f"{len(planned)} mutants to test ({total} in these modules, every {args.every}th;"
        f" {invalid} sampled ones are not valid Python and are left out)",
        flush=True,
    )
    return planned, total


def _key(module: str, operator: str, change: Change) -> tuple[str, str, str, str]:
    return module, operator, change.before, change.after


def _fingerprint(change: Change, tests: tuple[str, ...]) -> str:
    """Same mutated code, same tests: a result worth reusing (--resume)."""
    digest = hashlib.sha256(change.source.encode())
    for test in tests:
        path = ROOT / test.split("::")[0]  # a test file, or one test in it (file::name)
        digest.update(path.read_bytes() if path.exists() else test.encode())
        if "::" in test:
            digest.update(test.encode())
    return digest.hexdigest()


def _test(planned: list[tuple[Mutant, Change]], jobs: int, resume: bool) -> list[Result]:
    """Each planned mutant's outcome; equivalents are not run, nor (--resume) mutants whose
    code and tests are the same as in the interrupted run's progress file."""
    known = load_known(KNOWN)
    progress = FOLDER / "progress.jsonl"
    earlier: dict[str, Result] = {}
    if resume and progress.exists():
        for line in progress.read_text().splitlines():
            row = json.loads(line)
            fingerprint = row.pop("fingerprint")  # first: the right side is evaluated first
            earlier[fingerprint] = Result(**row)
    elif progress.exists():
        progress.unlink()
    results: list[Result] = []
    todo: list[tuple[Mutant, Change, str]] = []
    for mutant, change in planned:
        tests = MODULES[mutant.module][1]
        fingerprint = _fingerprint(change, tests)
        judged = known_as(known, mutant.module, change)
        if judged is not None:
            results.append(_result(mutant, change, judged.kind, 0.0, reason=judged.reason))
        elif fingerprint in earlier:
            results.append(earlier[fingerprint])
        else:
            todo.append((mutant, change, fingerprint))
    if not todo:
        return results
    print(f"{len(results)} known already, {len(todo)} to run", flush=True)
    slots = make_slots(ROOT, FOLDER / "slots", jobs)
    test_sets = sorted({MODULES[mutant.module][1] for mutant, _change, _ in todo})
    # A mutant that makes a test wait forever is stopped at 4x the warm baseline (and counts
    # as killed: the change was noticed, as a hang).
    limits = {
        tests: 4 * seconds + 20 for tests, seconds in _baseline(test_sets, slots, jobs).items()
    }
    runs = [
        Run(f"mutant-{index:04d}", {mutant.module: change.source},
            (*MODULES[mutant.module][1], *DESELECT, *HANG_S), limits[MODULES[mutant.module][1]])
        for index, (mutant, change, _fingerprint) in enumerate(todo)
    ]  # fmt: skip
    by_key = {run.key: planned_item for run, planned_item in zip(runs, todo, strict=True)}

    def record(run: Run, outcome: Outcome) -> None:
        mutant, change, fingerprint = by_key[run.key]
        verdict = "timeout" if outcome.timed_out else "survived" if outcome.passed else "killed"
        killed_by = _killed_by(outcome.log) if verdict == "killed" else ""
        result = _result(mutant, change, verdict, round(outcome.seconds, 1), killed_by=killed_by)
        results.append(result)
        with progress.open("a") as handle:
            handle.write(json.dumps({**asdict(result), "fingerprint": fingerprint}) + "\n")
        done.append(run.key)
        print(
            f"[{len(done)}/{len(runs)}] {verdict:8} {mutant.module}:{change.line} "
            f"{mutant.short_operator} ({outcome.seconds:.1f} s)",
            flush=True,
        )

    done: list[str] = []
    run_all(runs, slots, FOLDER / "logs", record)
    return results


def _result(mutant: Mutant, change: Change, outcome: str, seconds: float, **more: str) -> Result:
    area = MODULES[mutant.module][0]
    return Result(
        mutant.module, area, change.line, mutant.short_operator, mutant.occurrence,
        change.before, change.after, outcome, seconds, **more,
    )  # fmt: skip


def _write_report(results: list[Result], header: dict[str, object]) -> Path:
    order = {module: index for index, module in enumerate(MODULES)}
    results = sorted(
        results, key=lambda result: (order[result.module], result.line, result.operator)
    )
    report = _report(results, header)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    markdown, data = FOLDER / f"report-{stamp}.md", FOLDER / f"report-{stamp}.json"
    markdown.write_text(report)
    data.write_text(
        json.dumps({"header": header, "results": [asdict(result) for result in results]}, indent=1)
    )
    shutil.copyfile(data, FOLDER / "latest.json")
    shutil.copyfile(markdown, FOLDER / "latest.md")
    print(report)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=16, help="take every Nth mutant per module")
    parser.add_argument("--offset", type=int, default=0, help="start the sample at this index")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--modules", nargs="*", help="module paths (or areas) to mutate")
    parser.add_argument("--survivors", action="store_true", help="only the last run's survivors")
    parser.add_argument("--resume", action="store_true", help="reuse an interrupted run's results")
    parser.add_argument("--list", action="store_true", help="print the sample and stop")
    args = parser.parse_args()
    started = time.monotonic()
    FOLDER.mkdir(parents=True, exist_ok=True)
    # SIGTERM ends the run like Ctrl-C: the running children's process groups go with it.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    planned, total = _plan(args)
    if args.list:
        for mutant, change in planned:
            print(f"{mutant.module}:{change.line} {mutant.short_operator}: {change.after}")
        return
    results = _test(planned, args.jobs, args.resume)
    if args.survivors:
        results = _merged_into_latest(results)
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
    print(f"report: {_write_report(results, header)}")


def _commit() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
