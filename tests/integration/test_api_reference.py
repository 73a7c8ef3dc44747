"""VISION_API_REFERENCE.md against the live OpenAPI schema, so the two cannot drift apart.

The reference follows a few conventions, which :func:`check_reference` enforces:

- every ``### `` heading is an endpoint, exactly ``### METHOD /path`` with the schema's template;
- each endpoint has a status table, rows ``| `NNN` | `reason_code` ... | when |``, listing
  exactly the statuses the schema declares for it;
- fenced ``json request`` blocks are request bodies, ``json response NNN`` blocks are answers
  with status NNN; both are validated against the schema (unknown keys are errors);
- each endpoint has at least one ``curl`` command, aimed at its own method and path;
- the ``## Error codes`` table lists every reason code with its statuses; the code base's own
  codes and status mapping are checked against it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import vizdex.web.app  # noqa: F401  (imports every route module, so every error class is defined)
from tests.support.api_helpers import api_settings, live_server
from vizdex.core.errors import ImageRejectedError, VizdexError
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.errors import HTTP_CODES, IMAGE_STATUS, status_for

ROOT = Path(__file__).parents[2]
REFERENCE = ROOT / "VISION_API_REFERENCE.md"
SOURCES = ("vizdex/core", "vizdex/imaging", "vizdex/cli", "encoders", "search", "indexer", "web")
# Modules whose every `code="..."` is an ImageRejectedError's: the image door, and nvJPEG's.
IMAGE_DOOR_SOURCES = (*sorted(ROOT.glob("vizdex/imaging/*.py")), ROOT / "encoders/device_jpeg.py")

Spec = dict[str, Any]
Operation = tuple[str, str]  # (METHOD, path template)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
HEADING = re.compile(r"^### (?P<method>[A-Z]+) (?P<path>/\S*)$")
FENCE = re.compile(r"^```(?P<info>.*)$")
STATUS_ROW = re.compile(r"^\|\s*`(?P<status>\d{3})`\s*\|(?P<rest>.*)\|\s*$")
CODE_ROW = re.compile(r"^\|\s*`(?P<code>[a-z][a-z0-9_]*)`\s*\|(?P<statuses>[^|]*)\|.*\|\s*$")
BACKTICKED_STATUS = re.compile(r"`(\d{3})`")
BACKTICKED_CODE = re.compile(r"`([a-z][a-z0-9_]*)`")
LITERAL_CODE = re.compile(r"\bcode=\"([a-z][a-z0-9_]*)\"")
ERROR_CODES_HEADING = "## Error codes"
DATA_FLAGS = ("-d", "--data", "--data-raw", "--data-binary")
BODY_FLAGS = (*DATA_FLAGS, "-F", "--form", "-T", "--upload-file")
SHELL_BREAKS = ("|", ">", ">>", "&&", "||", ";")
URL_VARIABLES = ("$VIZDEX_URL", "${VIZDEX_URL}")
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


# -- the reference, parsed ----------------------------------------------------------------------


@dataclass
class Block:
    info: str
    body: str
    line: int


@dataclass
class Section:
    method: str
    path: str
    line: int
    lines: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Reference:
    sections: dict[Operation, Section]
    codes: dict[str, set[int]]  # reason code -> statuses, from the error-code table
    problems: list[str]


def parse_reference(text: str) -> Reference:
    sections: dict[Operation, Section] = {}
    codes: dict[str, set[int]] = {}
    problems: list[str] = []
    current: Section | None = None
    in_codes = False
    fence: Block | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.strip() == "```":
                if current is not None:
                    current.blocks.append(fence)
                fence = None
            else:
                fence.body += line + "\n"
            continue
        opened = FENCE.match(line)
        if opened:
            fence = Block(opened["info"].strip(), "", number)
            continue
        if line.startswith("## "):
            current = None
            in_codes = line.strip() == ERROR_CODES_HEADING
            continue
        if line.startswith("### "):
            in_codes = False
            heading = HEADING.match(line.rstrip())
            if heading is None or heading["method"] not in METHODS:
                problems.append(f"line {number}: {line!r} is not an endpoint heading")
                current = None
                continue
            key = (heading["method"], heading["path"])
            if key in sections:
                problems.append(f"line {number}: {line!r} is documented twice")
            current = sections[key] = Section(key[0], key[1], number)
            continue
        if current is not None:
            current.lines.append(line)
        elif in_codes:
            row = CODE_ROW.match(line)
            if row:
                statuses = {int(s) for s in BACKTICKED_STATUS.findall(row["statuses"])}
                if not statuses:
                    problems.append(f"line {number}: reason code {row['code']!r} has no status")
                codes.setdefault(row["code"], set()).update(statuses)
    if fence is not None:
        problems.append(f"line {fence.line}: a code block is never closed")
    if not codes:
        problems.append(f"no reason codes found under {ERROR_CODES_HEADING!r}")
    return Reference(sections, codes, problems)


# -- the schema ---------------------------------------------------------------------------------


def schema_operations(spec: Spec) -> dict[Operation, Spec]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method.upper() in METHODS
    }


def resolve(schema: Spec, spec: Spec) -> Spec:
    seen = 0
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), f"only local $refs are supported, got {ref!r}"
        node: Any = spec
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
        seen += 1
        assert seen < 50, f"$ref loop at {ref!r}"
    return schema


def json_schema_of(content: Spec | None) -> Spec | None:
    if not content:
        return None
    for media_type, body in content.items():
        if media_type == "application/json" or media_type.endswith("+json"):
            schema: Spec | None = body.get("schema")
            return schema
    return None


def object_properties(schema: Spec, spec: Spec) -> tuple[set[str], set[str]] | None:
    """(properties, required) of an object schema, ``allOf`` merged; None when not an object."""
    schema = resolve(schema, spec)
    if "allOf" in schema:
        merged: tuple[set[str], set[str]] = (set(), set())
        for part in schema["allOf"]:
            found = object_properties(part, spec)
            if found:
                merged[0].update(found[0])
                merged[1].update(found[1])
        return merged
    if "properties" not in schema:
        return None
    return set(schema["properties"]), set(schema.get("required", []))


def validate(value: Any, schema: Spec, spec: Spec, where: str) -> list[str]:
    """The shape of ``value`` against ``schema``: types, enums, required and unknown keys."""
    schema = resolve(schema, spec)
    problems: list[str] = []
    for part in schema.get("allOf", []):
        problems += validate(value, part, spec, where)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            tries = [validate(value, choice, spec, where) for choice in schema[key]]
            if all(tries):
                best = min(tries, key=len)
                problems.append(f"{where}: fits none of its {key} choices ({'; '.join(best)})")
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        fits = any(
            isinstance(value, JSON_TYPES[kind])
            and not (isinstance(value, bool) and kind in ("integer", "number"))
            for kind in allowed
        )
        if not fits:
            return [*problems, f"{where}: {json.dumps(value)[:60]} is not {' or '.join(allowed)}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: {value!r} is not {schema['const']!r}")
    if isinstance(value, dict) and "properties" in schema:
        properties: Spec = schema["properties"]
        unknown = sorted(set(value) - set(properties))
        # A choice without a type of its own only adds rules to its object (e.g. "exactly one of
        # these keys"): the keys it does not name are the object's to allow.
        if unknown and "type" in schema:
            problems.append(f"{where}: unknown keys {unknown} (allowed: {sorted(properties)})")
        missing = sorted(set(schema.get("required", [])) - set(value))
        if missing:
            problems.append(f"{where}: missing required keys {missing}")
        for key, item in value.items():
            if key in properties:
                problems += validate(item, properties[key], spec, f"{where}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += validate(item, schema["items"], spec, f"{where}[{index}]")
    return problems


# -- curl commands ------------------------------------------------------------------------------


@dataclass
class Curl:
    method: str
    path: str
    data: list[str]
    has_body: bool
    json_header: bool
    line: int
    error: str | None = None


def curl_commands(block: Block) -> Iterator[Curl]:
    joined = block.body.replace("\\\n", " ")
    for offset, line in enumerate(joined.splitlines()):
        stripped = line.strip()
        if not stripped.startswith("curl "):
            continue
        number = block.line + 1 + offset
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as error:  # e.g. an unbalanced quote
            yield Curl("?", "?", [], False, False, number, f"not valid shell ({error})")
            continue
        for stop, word in enumerate(words):
            if word in SHELL_BREAKS:
                words = words[:stop]
                break
        yield _curl(words, number)


def _curl(words: list[str], line: int) -> Curl:
    method: str | None = None
    url: str | None = None
    data: list[str] = []
    has_body = False
    json_header = False
    index = 1
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else ""
        if word in ("-X", "--request"):
            method = following.upper()
            index += 1
        elif word in BODY_FLAGS:
            has_body = True
            if word in DATA_FLAGS:
                data.append(following)
            index += 1
        elif word in ("-H", "--header"):
            name, _, value = following.partition(":")
            if name.strip().lower() == "content-type" and "json" in value.lower():
                json_header = True
            index += 1
        elif word in ("-o", "--output", "-w", "--write-out", "-u", "--user"):
            index += 1
        elif url is None and (word.startswith(URL_VARIABLES) or word.startswith("http")):
            url = word
        index += 1
    if url is None:
        return Curl("?", "?", data, has_body, json_header, line, "no $VIZDEX_URL/... URL")
    for variable in URL_VARIABLES:
        url = url.replace(variable, "", 1) if url.startswith(variable) else url
    path = re.sub(r"^https?://[^/]+", "", url).split("?", 1)[0]
    method = method or ("POST" if has_body else "GET")
    return Curl(method, path, data, has_body, json_header, line)


def template_regex(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    return re.compile(f"^{pattern}$")


# -- the check ----------------------------------------------------------------------------------


def check_reference(text: str, spec: Spec) -> list[str]:
    """Every way the reference disagrees with the schema, one line each (empty: they agree)."""
    reference = parse_reference(text)
    problems = list(reference.problems)
    operations = schema_operations(spec)
    documented = set(reference.sections)
    for method, path in sorted(set(operations) - documented):
        problems.append(f"undocumented: {method} {path} is in the schema but not the reference")
    for method, path in sorted(documented - set(operations)):
        problems.append(f"not in the schema: the reference documents {method} {path}")
    for key in sorted(documented & set(operations)):
        problems += check_section(reference.sections[key], operations[key], spec, reference.codes)
    return problems


def check_section(
    section: Section, operation: Spec, spec: Spec, codes: dict[str, set[int]]
) -> list[str]:
    name = section.name
    problems: list[str] = []
    declared = {int(status) for status in operation.get("responses", {})}

    # Statuses: the table lists exactly what the schema declares.
    listed: set[int] = set()
    for line in section.lines:
        row = STATUS_ROW.match(line)
        if row is None:
            continue
        status = int(row["status"])
        if status in listed:
            problems.append(f"{name}: status {status} is listed twice")
        listed.add(status)
        cells = row["rest"].split("|")
        for code in BACKTICKED_CODE.findall(cells[0]):
            if code not in codes:
                problems.append(f"{name}: reason code {code!r} is not in the error-code table")
            elif status not in codes[code]:
                problems.append(
                    f"{name}: {code!r} is listed under {status}, the error-code table says "
                    f"{sorted(codes[code])}"
                )
    for status in sorted(declared - listed):
        problems.append(f"{name}: the schema declares status {status}; the reference omits it")
    for status in sorted(listed - declared):
        problems.append(f"{name}: the reference lists status {status}; the schema does not")

    # Examples.
    body = operation.get("requestBody", {}).get("content")
    request_schema = json_schema_of(body)
    requests = responses = curls = 0
    for block in section.blocks:
        words = block.info.split()
        where = f"{name} (line {block.line})"
        if words[:2] == ["json", "request"]:
            requests += 1
            problems += check_json(block.body, request_schema, spec, f"{where} request")
        elif words[:2] == ["json", "response"]:
            if len(words) != 3 or not words[2].isdigit():
                problems.append(f"{where}: write ```json response NNN``` with the status")
                continue
            status = int(words[2])
            if status not in declared:
                problems.append(f"{where}: a {status} example, but the schema has no {status}")
                continue
            responses += 200 <= status < 300
            schema = json_schema_of(operation["responses"][str(status)].get("content"))
            problems += check_json(block.body, schema, spec, f"{where} {status}")
            fields = object_properties(schema, spec) if schema else None
            if fields and {"status_code", "code"} <= fields[0]:  # an error body
                problems += check_error_example(block.body, status, codes, where)
        elif words[:1] == ["json"]:
            problems.append(f"{where}: tag JSON blocks 'json request' or 'json response NNN'")
        elif words[:1] in (["bash"], ["sh"], ["shell"]):
            for curl in curl_commands(block):
                curls += 1
                requests += curl.has_body
                problems += check_curl(curl, section, request_schema, spec)
    if curls == 0:
        problems.append(f"{name}: no curl example")
    if body and requests == 0:
        problems.append(f"{name}: no request body example (```json request``` or curl -d/-F)")
    json_success = any(
        200 <= int(status) < 300 and json_schema_of(answer.get("content"))
        for status, answer in operation.get("responses", {}).items()
    )
    if json_success and responses == 0:
        problems.append(f"{name}: no ```json response 2xx``` example")
    return problems


def check_json(text: str, schema: Spec | None, spec: Spec, where: str) -> list[str]:
    if schema is None:
        return [f"{where}: the schema has no JSON body here"]
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return [f"{where}: not valid JSON ({error})"]
    return validate(value, schema, spec, where)


def check_error_example(
    text: str, status: int, codes: dict[str, set[int]], where: str
) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []  # reported by check_json
    if not isinstance(value, dict):
        return []  # reported by check_json
    problems = []
    if value.get("status_code") != status:
        problems.append(f"{where}: status_code {value.get('status_code')} under a {status} tag")
    code = value.get("code")
    if code not in codes or status not in codes[code]:
        problems.append(f"{where}: reason code {code!r} is not documented for {status}")
    return problems


def check_curl(curl: Curl, section: Section, schema: Spec | None, spec: Spec) -> list[str]:
    where = f"{section.name} (curl, line {curl.line})"
    if curl.error is not None:
        return [f"{where}: {curl.error}"]
    problems = []
    if curl.method != section.method or not template_regex(section.path).match(curl.path):
        problems.append(f"{where}: the command is {curl.method} {curl.path}")
    for data in curl.data:
        if data.startswith("@") or "$(" in data or "${" in data:
            continue  # read from a file or built by the shell: not checkable here
        if not curl.json_header:
            problems.append(f"{where}: -d without -H 'content-type: application/json'")
        problems += check_json(data, schema, spec, f"{where} body")
    return problems


# -- reason codes in the code base --------------------------------------------------------------

# Set in web/errors.py by expressions the scans below do not see; http_error keeps the status of
# whatever HTTP error the framework raised.
OTHER_CODES: dict[str, set[int]] = {
    "http_error": set(),
    "internal_error": {500},
    "client_disconnected": {499},
}


def _subclasses(cls: type[VizdexError]) -> Iterator[type[VizdexError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def code_base_codes() -> dict[str, set[int]]:
    """Reason code -> the statuses the code base answers with (empty: it depends)."""
    found: dict[str, set[int]] = {}
    classes: list[type[VizdexError]] = [VizdexError, *_subclasses(VizdexError)]
    for cls in classes:
        if cls.__module__.startswith("tests"):
            continue
        found.setdefault(cls.code, set()).add(status_for(cls("probe")))
    for code, status in IMAGE_STATUS.items():
        found.setdefault(code, set()).add(status)
    for status, code in HTTP_CODES.items():
        found.setdefault(code, set()).add(status)
    for code, statuses in OTHER_CODES.items():
        found.setdefault(code, set()).update(statuses)
    for package in SOURCES:
        for source in (ROOT / package).rglob("*.py"):
            for code in LITERAL_CODE.findall(source.read_text()):
                found.setdefault(code, set())
    return found


# -- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec(
    tmp_path_factory: pytest.TempPathFactory, cpu_settings: EncoderSettings, clip_encoder: Encoder
) -> Spec:
    settings = api_settings(tmp_path_factory.mktemp("reference") / "data", cpu_settings)
    with live_server(settings, {clip_encoder.name: clip_encoder}) as server:
        answer = httpx.get(f"{server.url}/schema/openapi.json", timeout=30)
        answer.raise_for_status()
        schema: Spec = answer.json()
    return schema


@pytest.fixture(scope="module")
def reference() -> str:
    return REFERENCE.read_text()


def test_reference_matches_the_live_schema(spec: Spec, reference: str) -> None:
    operations = schema_operations(spec)
    assert len(operations) >= 20  # the schema really is the app's
    parsed = parse_reference(reference)
    assert len(parsed.sections) >= 20  # the parser really finds the sections
    problems = check_reference(reference, spec)
    assert not problems, "VISION_API_REFERENCE.md disagrees with the schema:\n" + "\n".join(
        problems
    )


def test_reference_has_examples_of_every_kind(reference: str) -> None:
    blocks = [block for s in parse_reference(reference).sections.values() for block in s.blocks]
    infos = {" ".join(block.info.split()[:2]) for block in blocks}
    assert {"json request", "json response", "bash"} <= infos
    assert sum(block.info.startswith("json response 4") for block in blocks) >= 5


def code_table_problems(documented: dict[str, set[int]]) -> list[str]:
    problems = []
    for code, statuses in sorted(code_base_codes().items()):
        if code not in documented:
            problems.append(f"{code!r} (status {sorted(statuses) or 'varies'}) is undocumented")
        elif not statuses <= documented[code]:
            said = sorted(documented[code])
            problems.append(f"{code!r} answers {sorted(statuses)}, the reference says {said}")
    return problems


def test_every_reason_code_is_documented(reference: str) -> None:
    problems = code_table_problems(parse_reference(reference).codes)
    assert not problems, "the error-code table is out of date:\n" + "\n".join(problems)
    without = reference.replace("| `starting` | `503` |", "| `startin` | `503` |", 1)
    assert without != reference
    assert code_table_problems(parse_reference(without).codes) == [
        "'starting' (status varies) is undocumented"
    ]
    wrong = reference.replace("| `collection_exists` | `409` |", "| `collection_exists` | `400` |")
    assert code_table_problems(parse_reference(wrong).codes) == [
        "'collection_exists' answers [409], the reference says [400]"
    ]


def test_image_door_codes_have_their_statuses(reference: str) -> None:
    """The door's refusals are ImageRejectedErrors, whose status depends on the code."""
    documented = parse_reference(reference).codes
    door_codes = {
        code
        for source in IMAGE_DOOR_SOURCES
        for code in LITERAL_CODE.findall((ROOT / source).read_text())
    }
    assert {"too_large", "unsupported_format", "corrupt", "invalid_base64"} <= door_codes
    for code in sorted(door_codes):
        status = status_for(ImageRejectedError("probe", code=code))
        assert status in documented.get(code, set()), f"{code!r} answers {status}"


# -- the checker itself can fail ----------------------------------------------------------------


def _drop_section(text: str, heading: str) -> str:
    lines = text.splitlines()
    start = lines.index(heading)
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "### "))),
        len(lines),
    )
    return "\n".join(lines[:start] + lines[end:])


def test_checker_reports_a_missing_endpoint(spec: Spec, reference: str) -> None:
    mutated = _drop_section(reference, "### DELETE /v1/collections/{name}")
    assert check_reference(mutated, spec) == [
        "undocumented: DELETE /v1/collections/{name} is in the schema but not the reference"
    ]


def test_checker_reports_an_invented_endpoint(spec: Spec, reference: str) -> None:
    mutated = reference + '\n### GET /v1/invented\n\n```bash\ncurl "$VIZDEX_URL/v1/invented"\n```\n'
    assert check_reference(mutated, spec) == [
        "not in the schema: the reference documents GET /v1/invented"
    ]
    bad_heading = reference + "\n### Some notes\n"
    assert any("is not an endpoint heading" in p for p in check_reference(bad_heading, spec))


def test_checker_reports_statuses_and_examples_that_drift(spec: Spec, reference: str) -> None:
    section = reference.split("### POST /v1/collections\n", 1)[1].split("\n### ", 1)[0]
    assert "| `409` |" in section and '"name": "holidays"' in section
    changed = (
        section.replace("| `409` |", "| `418` |")
        .replace('"name": "holidays"', '"name": "holidays", "colour": "red"', 1)
        .replace('"image_count": 0', '"image_total": 0', 1)
    )
    problems = check_reference(reference.replace(section, changed), spec)
    assert any("declares status 409; the reference omits it" in p for p in problems), problems
    assert any("lists status 418; the schema does not" in p for p in problems), problems
    assert any("unknown keys ['colour']" in p for p in problems), problems
    assert any("unknown keys ['image_total']" in p for p in problems), problems
    assert any("missing required keys ['image_count']" in p for p in problems), problems


def test_checker_reports_a_curl_aimed_elsewhere(spec: Spec, reference: str) -> None:
    section = reference.split("### GET /v1/jobs/{job_id}\n", 1)[1].split("\n### ", 1)[0]
    changed = section.replace('"$VIZDEX_URL/v1/jobs/', '"$VIZDEX_URL/v1/job/', 1)
    assert changed != section
    problems = check_reference(reference.replace(section, changed), spec)
    assert any("GET /v1/jobs/{job_id} (curl" in p for p in problems), problems


def test_validator_follows_refs_and_choices(spec: Spec) -> None:
    search = json_schema_of(
        spec["paths"]["/v1/collections/{name}/search"]["post"]["requestBody"]["content"]
    )
    assert search is not None
    assert validate({"text": "a bike", "k": 5}, search, spec, "body") == []
    assert validate({"image": {"data": "AAAA"}}, search, spec, "body") == []
    assert validate({"image": {"file": "x"}}, search, spec, "body")
    assert validate({"k": "five"}, search, spec, "body")
    assert validate({"text": "a", "filter": {"metadata": {}, "colour": 1}}, search, spec, "body")
    assert validate({"text": "a bike", "image_id": 3}, search, spec, "body")  # two kinds at once
    page = {"$ref": "#/components/schemas/ImagePage"}
    assert validate({"images": [], "next_after": None}, page, spec, "body") == []
    assert validate({"images": [{"id": 1}], "next_after": None}, page, spec, "body")
