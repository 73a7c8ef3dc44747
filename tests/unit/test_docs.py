"""The README documents every VIZDEX_* variable the code reads, and CI runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("vizdex/core", "vizdex/imaging", "vizdex/cli", "encoders", "search", "indexer", "web")
ENV_READ = re.compile(r"(?:env_(?:str|int|float|bool|list|choice)|setting)\(\s*\"([A-Z0-9_]+)\"")


def _variables_in_code() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            found.update(f"VIZDEX_{name}" for name in ENV_READ.findall(source.read_text()))
    return found


def test_every_variable_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    variables = _variables_in_code()
    assert len(variables) > 20  # the scan itself works
    missing = sorted(v for v in variables if f"`{v}`" not in readme)
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks if "pytest" in b and "pip install" in b)
    assert test_command.strip() in ci
