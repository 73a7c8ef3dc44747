"""Settings of the image door (``vizdex.imaging``: limits, URL fetches), from ``VIZDEX_*``."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from vizdex.core.env import read_settings, setting
from vizdex.core.errors import InvalidInputError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ImageInputSettings:
    """Limits and permissions for every image that enters vizdex.

    The defaults are the safe ones: no file paths, no URLs. ``max_aspect_ratio``: the longest
    side may be at most this many times the shortest (``VIZDEX_MAX_ASPECT_RATIO``).
    ``allowed_networks`` exempts CIDR ranges from the private/loopback/link-local ban on URL
    fetches (e.g. an intranet image host).
    """

    max_bytes: int = setting("MAX_IMAGE_BYTES", 50_000_000)
    max_pixels: int = setting("MAX_IMAGE_PIXELS", 50_000_000)
    # Models scale the short side to ~224 px, so the long side grows with the ratio: at 1:100
    # a 224×22,400 intermediate (~60 MB in float32); a 1×50,000,000 image would need 600 GB.
    max_aspect_ratio: float = setting("MAX_ASPECT_RATIO", 100.0)
    # Pixels decoded at once in this process, all requests together (vizdex.imaging.budget).
    decode_budget_pixels: int = setting("DECODE_BUDGET_PIXELS", 100_000_000)
    allowed_roots: tuple[str, ...] = setting("ALLOWED_ROOTS", ())
    allow_urls: bool = setting("ALLOW_URLS", False)
    url_timeout_s: float = setting("URL_TIMEOUT", 5.0)
    max_redirects: int = setting("URL_MAX_REDIRECTS", 3)
    allowed_networks: tuple[str, ...] = setting("URL_ALLOWED_NETWORKS", ())

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise InvalidInputError(f"max_bytes must be at least 1, got {self.max_bytes}")
        if self.max_pixels < 1:
            raise InvalidInputError(f"max_pixels must be at least 1, got {self.max_pixels}")
        # Above Pillow's own threshold it would warn (an error under our test settings) or refuse
        # on its own, so a larger cap would behave differently in tests and in production.
        pillow_cap = Image.MAX_IMAGE_PIXELS
        if pillow_cap is not None and self.max_pixels > pillow_cap:
            raise InvalidInputError(
                f"max_pixels can be at most Pillow's limit of {pillow_cap:,} pixels "
                f"(PIL.Image.MAX_IMAGE_PIXELS), got {self.max_pixels:,}"
            )
        if self.decode_budget_pixels < 1:
            raise InvalidInputError(
                "decode_budget_pixels (VIZDEX_DECODE_BUDGET_PIXELS) must be at least 1, "
                f"got {self.decode_budget_pixels}"
            )
        if not 1 <= self.max_aspect_ratio <= 100_000:  # also refuses inf and nan
            raise InvalidInputError(
                "max_aspect_ratio (VIZDEX_MAX_ASPECT_RATIO) must be between 1 and 100000, "
                f"got {self.max_aspect_ratio}"
            )
        if not self.url_timeout_s > 0:
            raise InvalidInputError(f"url_timeout_s must be positive, got {self.url_timeout_s}")
        if self.max_redirects < 0:
            raise InvalidInputError(f"max_redirects must be >= 0, got {self.max_redirects}")
        for root in self.allowed_roots:
            if not os.path.isabs(root) or "\x00" in root:
                raise InvalidInputError(f"allowed roots must be absolute paths, got {root!r}")
        self.networks()  # fail at start-up, not on the first URL

    def networks(self) -> tuple[IPNetwork, ...]:
        """``allowed_networks`` parsed; a bad CIDR is a configuration error."""
        parsed: list[IPNetwork] = []
        for cidr in self.allowed_networks:
            try:
                parsed.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise InvalidInputError(f"not a network in CIDR form: {cidr!r}") from None
        return tuple(parsed)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ImageInputSettings:
        """Lists (``VIZDEX_ALLOWED_ROOTS``, ``VIZDEX_URL_ALLOWED_NETWORKS``) are comma-separated."""
        return read_settings(cls, env)


def format_bytes(count: int) -> str:
    """``61234567`` → ``"61.2 MB"``: sizes in error messages, in decimal units like the limits."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:,.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} bytes" if count != 1 else "1 byte"


def format_megapixels(pixels: int) -> str:
    """``3721000000`` → ``"3,721 MP"``; small images keep one decimal."""
    mp = pixels / 1e6
    text = f"{mp:,.0f}" if mp >= 100 else f"{mp:,.1f}".removesuffix(".0")
    return f"{text} MP"
