"""The search page in a real headless Chromium against a live loopback server with tiny models.

Screenshots of every step land in ``test-artifacts/ui/``. Without Chromium these tests skip
locally and fail under ``CI``, so CI never goes green without having driven the browser.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.api_helpers import LiveServer, api_settings, live_server, photo_jpeg
from tests.support.near_copies import near_copy_set
from vizdex.encoders.base import Encoder
from vizdex.encoders.settings import EncoderSettings
from vizdex.web.settings import AuthSettings, LimitSettings

if TYPE_CHECKING:  # imported for real only once the browser is known to be there
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("VIZDEX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
TIMEOUT_MS = 20_000  # tiny models on a shared 2-core machine: generous, never hit when healthy
ADMIN, READER = "ui-admin-key", "ui-read-key"


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the `playwright` Python package is not installed"
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium is not at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = _missing_browser()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _server(
    tmp_path_factory: pytest.TempPathFactory,
    encoders: EncoderSettings,
    models: dict[str, Encoder],
    **overrides: Any,
) -> Iterator[LiveServer]:
    settings = api_settings(tmp_path_factory.mktemp("ui") / "data", encoders, **overrides)
    with live_server(settings, models) as live:
        yield live


@pytest.fixture(scope="module")
def open_server(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
    dino_encoder: Encoder,
) -> Iterator[LiveServer]:
    # More than two images become a background job, so the progress bar follows /v1/jobs.
    models = {clip_encoder.name: clip_encoder, dino_encoder.name: dino_encoder}
    limits = LimitSettings(upload_sync_images=2)
    yield from _server(tmp_path_factory, cpu_settings, models, limits=limits)


@pytest.fixture(scope="module")
def keyed_server(
    tmp_path_factory: pytest.TempPathFactory,
    cpu_settings: EncoderSettings,
    clip_encoder: Encoder,
) -> Iterator[LiveServer]:
    auth = AuthSettings(admin_keys=(ADMIN,), read_keys=(READER,))
    yield from _server(tmp_path_factory, cpu_settings, {clip_encoder.name: clip_encoder}, auth=auth)


def _shot(page: Page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def _new_page(browser: Browser, errors: list[str], **options: Any) -> Page:
    """A fresh context (empty sessionStorage); uncaught script errors are appended to ``errors``."""
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def _result_ids(page: Page) -> list[int]:
    ids: list[str] = page.eval_on_selector_all("#grid .hit", "els => els.map(e => e.dataset.id)")
    return [int(value) for value in ids]


def _wait_for(page: Page, script: str, arg: Any = None) -> None:
    """Polls ``script`` from Python: ``wait_for_function`` evaluates strings in the page, which
    the page's own Content-Security-Policy (no eval) rightly refuses."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.evaluate(script, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def _thumbnails_loaded(page: Page, count: int) -> None:
    _wait_for(
        page,
        """count => {
          const imgs = [...document.querySelectorAll('#grid .hit img')];
          return imgs.length === count && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        count,
    )


def test_page_is_served_without_a_key(keyed_server: LiveServer) -> None:
    # Runs without a browser too: the page and its assets are public, the API is not.
    with httpx.Client(base_url=keyed_server.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/static/app.js"' in page.text
        for asset, kind in (("/static/app.js", "javascript"), ("/static/app.css", "css")):
            served = client.get(asset)
            assert served.status_code == 200 and kind in served.headers["content-type"]
        assert client.get("/v1/collections").status_code == 401
        assert "/static/app.js" not in client.get("/schema/openapi.json").text


def test_upload_search_reverse_and_more_like_this(
    browser: Browser, open_server: LiveServer, tmp_path: Path
) -> None:
    errors: list[str] = []
    page = _new_page(browser, errors, viewport={"width": 1200, "height": 900})
    page.goto(open_server.url + "/")
    page.get_by_label("New collection").fill("holidays")
    page.get_by_role("button", name="Create").click()
    _wait_for(page, "() => document.getElementById('collection-select').value === 'holidays'")
    page.get_by_text("holidays: 0 images").wait_for()
    _shot(page, "01-collection-created")

    photos = []
    for seed, (width, height) in enumerate([(160, 120), (120, 160), (200, 140)], start=1):
        path = tmp_path / f"photo-{seed}.jpg"
        path.write_bytes(photo_jpeg(seed, width, height))
        photos.append(path)
    with page.expect_file_chooser() as chooser:
        page.get_by_text("Choose images…").click()
    chooser.value.set_files([str(p) for p in photos])
    _wait_for(page, "() => document.getElementById('upload-progress').value === 100")
    summary = page.locator("#upload-summary .summary")
    assert summary.inner_text() == "3 indexed, 0 skipped as duplicates, 0 refused."
    page.get_by_text("holidays: 3 images").wait_for()
    _shot(page, "02-uploaded")

    # Two files answer at once (no job): a duplicate and a file that is not an image.
    broken = tmp_path / "notes.jpg"
    broken.write_bytes(b"these are not the pixels you are looking for")
    page.set_input_files("#upload-files", [str(photos[0]), str(broken)])
    page.get_by_text("0 indexed, 1 skipped as duplicates, 1 refused.").wait_for()
    refusal = page.locator("#upload-summary .failures li").inner_text()
    assert refusal.startswith("notes.jpg: "), refusal
    _shot(page, "02b-duplicate-and-refused")

    page.get_by_label("Describe it").fill("a photo of a beach")
    page.get_by_label("Describe it").press("Enter")
    _thumbnails_loaded(page, 3)
    alts = page.eval_on_selector_all("#grid .hit img", "els => els.map(e => e.alt)")
    assert sorted(alts) == [p.name for p in photos]
    _shot(page, "03-text-search")

    # Drop a file on the image-query zone, as a person dragging it from their desktop would.
    query = photos[1]
    transfer = page.evaluate_handle(
        """([name, b64]) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
          return transfer;
        }""",
        [query.name, base64.b64encode(query.read_bytes()).decode("ascii")],
    )
    page.dispatch_event("#query-drop", "drop", {"dataTransfer": transfer})
    page.get_by_text(f"results like {query.name}").wait_for()
    _thumbnails_loaded(page, 3)
    first = page.locator("#grid .hit").first
    assert first.locator("img").get_attribute("alt") == query.name
    assert page.locator("#query-preview").get_attribute("alt") == f"Query image: {query.name}"
    _shot(page, "04-image-search")

    query_id = _result_ids(page)[0]
    first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("heading", name=query.name).wait_for()
    _wait_for(page, "() => document.getElementById('detail-image').naturalWidth === 120")
    _shot(page, "05-detail", full_page=False)  # the modal covers the viewport, not the page
    dialog.get_by_role("button", name="More like this").click()
    page.get_by_text(f"2 results like {query.name}").wait_for()
    _thumbnails_loaded(page, 2)
    assert query_id not in _result_ids(page)  # the image itself is not "like" itself
    assert not page.get_by_role("button", name="Load more").is_visible()  # all results shown
    _shot(page, "06-more-like-this")

    # Keyboard only: a result is a real button; Enter opens the detail, Escape closes it.
    page.locator("#grid .hit").first.focus()
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="More like this").wait_for()
    assert page.evaluate("document.activeElement.id") == "more-like-this"
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    # Pasting an image (e.g. a screenshot) searches with it too.
    pasted = photos[2]
    page.evaluate(
        """([name, b64]) => {
          const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
          const clipboard = new DataTransfer();
          clipboard.items.add(new File([bytes], name, {type: 'image/jpeg'}));
          document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: clipboard}));
        }""",
        [pasted.name, base64.b64encode(pasted.read_bytes()).decode("ascii")],
    )
    page.get_by_text(f"3 results like {pasted.name}").wait_for()
    assert page.locator("#grid .hit img").first.get_attribute("alt") == pasted.name

    page.set_viewport_size({"width": 390, "height": 844})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    _shot(page, "07-phone-width")
    assert errors == []


def test_key_prompt_and_errors(browser: Browser, keyed_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "dog.jpg").write_bytes(photo_jpeg(7))
    errors: list[str] = []
    page = _new_page(browser, errors, viewport={"width": 900, "height": 800})
    page.goto(keyed_server.url + "/")
    key = page.get_by_label("API key", exact=True)
    key.wait_for()
    assert page.locator("#message").inner_text().startswith("Could not list the collections")
    _shot(page, "08-key-prompt")

    key.fill("not-a-key")
    key.press("Enter")
    page.get_by_text("That API key was not accepted").wait_for()
    assert key.is_visible()

    key.fill(READER)
    key.press("Enter")
    page.get_by_text("Create a collection to start adding images.").wait_for()
    assert not key.is_visible()
    assert page.evaluate("sessionStorage.getItem('vizdex.apiKey')") == READER
    assert page.evaluate("localStorage.getItem('vizdex.apiKey')") is None

    page.get_by_label("New collection").fill("family")
    page.get_by_role("button", name="Create").click()
    alert = page.get_by_role("alert")
    alert.get_by_text("changing collections needs an admin key").wait_for()
    _shot(page, "09-forbidden")

    page.get_by_label("Describe it").fill("a dog")
    page.get_by_role("button", name="Search", exact=True).click()
    alert.get_by_text("Create or choose a collection first").wait_for()

    # Without a key, the refused create asks for one and is retried with the admin key given.
    page.get_by_role("button", name="Forget API key").click()
    page.get_by_role("button", name="Create").click()
    key.fill(ADMIN)
    key.press("Enter")
    page.get_by_text("family: 0 images").wait_for()
    page.set_input_files("#upload-files", [str(tmp_path / "dog.jpg")])
    page.get_by_text("1 indexed, 0 skipped as duplicates, 0 refused.").wait_for()
    page.get_by_role("button", name="Search", exact=True).click()
    _thumbnails_loaded(page, 1)  # an <img> cannot send the key: fetched, then shown as blob:
    assert (page.locator("#grid .hit img").get_attribute("src") or "").startswith("blob:")
    _shot(page, "10-keyed-search")
    assert errors == []


def _upload_near_copies(server: LiveServer, collection: str) -> dict[str, int]:
    """The near-copy set of two bases, uploaded through the API; file name -> image id."""
    photos = near_copy_set(2)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.post("/v1/collections", json={"name": collection}).status_code == 201
        items = [{"data": base64.b64encode(p.data).decode(), "name": p.name} for p in photos]
        answer = client.post(f"/v1/collections/{collection}/images", json={"images": items})
        assert answer.status_code == 202, answer.text  # more than two images: a job
        job_url = answer.json()["job_url"]
        deadline = time.monotonic() + TIMEOUT_MS / 1000 * 3
        while client.get(job_url).json()["state"] != "done":
            assert time.monotonic() < deadline, "the upload job did not finish"
            time.sleep(0.1)
        images = client.get(f"/v1/collections/{collection}/images").json()["images"]
    return {image["original_name"]: image["id"] for image in images}


def _group_rows(page: Page) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        "#dups-groups .dup-group",
        "groups => groups.map(g => [...g.querySelectorAll('.dup-image img')].map(i => i.alt))",
    )
    return rows


def test_duplicates_view_shows_groups_and_deletes_copies_after_confirming(
    browser: Browser, open_server: LiveServer
) -> None:
    ids = _upload_near_copies(open_server, "near")
    with httpx.Client(base_url=open_server.url, timeout=60) as client:
        expected = client.post("/v1/collections/near/duplicates", json={}).json()
    assert expected["total_groups"] >= 2  # the tiny DINOv3 sees at least the two bases
    expected_rows = [[image["original_name"] for image in g["images"]] for g in expected["groups"]]

    errors: list[str] = []
    page = _new_page(browser, errors, viewport={"width": 1200, "height": 900})
    page.goto(open_server.url + "/")
    _wait_for(
        page,
        "() => [...document.querySelectorAll('#collection-select option')].length > 0"
        " && document.getElementById('collection-select').value !== ''",
    )
    page.select_option("#collection-select", "near")
    page.get_by_text("near: 16 images").wait_for()
    page.get_by_role("button", name="Find duplicates").click()
    page.get_by_text(f"{expected['total_groups']} groups of near-copies").wait_for()
    assert _group_rows(page) == expected_rows  # as the API groups them, the keeper first
    first = page.locator("#dups-groups .dup-group").first
    keeper = expected["groups"][0]["images"][0]
    assert first.locator(".dup-image.keeper img").get_attribute("alt") == keeper["original_name"]
    assert first.locator(".dup-image.keeper .badge").inner_text() == "Keeper"
    assert first.locator(".dup-image .badge").count() == 1
    _wait_for(
        page,
        """() => [...document.querySelectorAll('#dups-groups img')]
                 .every(i => i.complete && i.naturalWidth > 0)""",
    )
    _shot(page, "11-duplicates")

    # Reviewed marks stay in this browser across reloads.
    first.get_by_role("button", name="Mark reviewed").click()
    assert first.get_attribute("class") == "dup-group reviewed"
    page.reload()
    page.get_by_role("button", name="Find duplicates").click()
    page.get_by_text(f"{expected['total_groups']} groups of near-copies").wait_for()
    first = page.locator("#dups-groups .dup-group").first
    assert first.get_by_role("button", name="Reviewed").get_attribute("aria-pressed") == "true"

    # "Open" shows the image; "More like this" searches with it.
    name = keeper["original_name"]
    first.get_by_role("button", name=f"Open {name}").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("heading", name=name).wait_for()
    dialog.get_by_role("button", name="Close").click()
    first.get_by_role("button", name=f"More like {name}").click()
    page.get_by_text(f"results like {name}").wait_for()
    assert keeper["id"] not in _result_ids(page)

    # Deleting the copies asks first; cancelling deletes nothing.
    copies = [image for image in expected["groups"][0]["images"] if not image["keeper"]]
    first.get_by_role("button", name=f"Delete {len(copies)} copies…").click()
    confirm = page.get_by_role("dialog", name="Delete copies?")
    confirm.get_by_text("The keeper stays.").wait_for()
    _shot(page, "12-delete-copies", full_page=False)
    confirm.get_by_role("button", name="Cancel").click()
    with httpx.Client(base_url=open_server.url, timeout=60) as client:
        assert client.get(f"/v1/collections/near/images/{copies[0]['id']}").status_code == 200
        first.get_by_role("button", name=f"Delete {len(copies)} copies…").click()
        confirm.get_by_role("button", name="Delete").click()
        page.get_by_text(f"{name}: copies deleted").wait_for()
        for copy in copies:
            gone = client.get(f"/v1/collections/near/images/{copy['id']}")
            assert gone.status_code == 404
        assert client.get(f"/v1/collections/near/images/{keeper['id']}").status_code == 200
    assert first.locator(".dup-image").count() == 1
    page.get_by_text(f"near: {16 - len(copies)} images").wait_for()
    _shot(page, "13-copies-deleted")
    assert set(ids) >= {image["original_name"] for image in expected["groups"][0]["images"]}
    assert errors == []
