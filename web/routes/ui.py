"""The search page: one static HTML file plus plain JS/CSS, served without a key.

The page holds no secrets; it asks for an API key only when the API answers 401. No CDN and no
build step, so it works offline exactly as shipped in the package.
"""

from __future__ import annotations

from pathlib import Path

from litestar import MediaType, Response, get
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

WEB_DIR = Path(__file__).resolve().parent.parent
PAGE = WEB_DIR / "templates" / "index.html"
STATIC_DIR = WEB_DIR / "static"

# Everything comes from this origin; thumbnails fetched with a key are shown as blob: URLs and
# query previews as data:/blob: URLs. No inline script, so an injected name cannot run code.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@get("/", include_in_schema=False, sync_to_thread=False)
def index() -> Response[bytes]:
    # Read per request (a few KB): an edited page shows up without a restart.
    return Response(PAGE.read_bytes(), media_type=MediaType.HTML, headers=PAGE_HEADERS)


static_files = create_static_files_router(
    path="/static",
    directories=[STATIC_DIR],
    name="ui-static",
    include_in_schema=False,
)

UI_ROUTES: list[ControllerRouterHandler] = [index, static_files]
