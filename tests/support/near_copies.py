"""A photo set with known near-copies, for the duplicate-grouping tests and the page's test.

Each base photo comes as the original and six edits people make to a picture: re-saved at two
lower JPEG qualities, halved in size, cropped by 10 % (5 % off each side), brightened by 15 % and
mirrored. Each of those seven files is a different file (different sha256), so ingestion keeps
them all. Beside them, for every base, a *different* photo redrawn in the base's own colour
palette: it shares the colours but not the picture, and must stay out of the base's group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from tests.support.synthetic_photos import jpeg_bytes, make_photo

SIZE = (320, 240)
PALETTE_COLOURS = 12
EDITS = ("original", "q60", "q35", "half", "crop10", "bright", "mirror")


@dataclass(frozen=True)
class NearCopy:
    name: str  # file name: "<base>-<edit>.jpg", or "<base>-palette.jpg" for the look-alike
    data: bytes
    group: str | None  # the base it is a copy of; None for a palette look-alike (a singleton)


def edit(photo: Image.Image, name: str) -> bytes:
    """``photo`` with one of ``EDITS`` applied, as JPEG bytes."""
    width, height = photo.size
    if name == "original":
        return jpeg_bytes(photo, 95)
    if name == "q60":
        return jpeg_bytes(photo, 60)
    if name == "q35":
        return jpeg_bytes(photo, 35)
    if name == "half":
        return jpeg_bytes(photo.resize((width // 2, height // 2), Image.Resampling.LANCZOS), 90)
    if name == "crop10":
        dx, dy = width // 20, height // 20
        return jpeg_bytes(photo.crop((dx, dy, width - dx, height - dy)), 90)
    if name == "bright":
        return jpeg_bytes(ImageEnhance.Brightness(photo).enhance(1.15), 90)
    if name == "mirror":
        return jpeg_bytes(ImageOps.mirror(photo), 90)
    raise ValueError(f"unknown edit {name!r}")


def palette_twin(photo: Image.Image, seed: int) -> Image.Image:
    """Another photo (its own shapes and gradients) painted with ``photo``'s palette only."""
    palette = photo.quantize(PALETTE_COLOURS)
    other = make_photo(*photo.size, seed=seed)
    return other.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB")


def near_copy_set(bases: int = 4, *, seed: int = 500) -> list[NearCopy]:
    """``bases`` groups of seven near-copies each, plus one palette look-alike per base."""
    items: list[NearCopy] = []
    for index in range(bases):
        name = f"base{index}"
        photo = make_photo(*SIZE, seed=seed + index)
        items.extend(NearCopy(f"{name}-{kind}.jpg", edit(photo, kind), name) for kind in EDITS)
        twin = palette_twin(photo, seed=seed + 1000 + index)
        items.append(NearCopy(f"{name}-palette.jpg", jpeg_bytes(twin, 90), None))
    return items


def expected_groups(items: list[NearCopy]) -> set[frozenset[str]]:
    """The known near-copy sets, by file name (singletons are not groups)."""
    groups: dict[str, set[str]] = {}
    for item in items:
        if item.group is not None:
            groups.setdefault(item.group, set()).add(item.name)
    return {frozenset(names) for names in groups.values() if len(names) > 1}


def write_set(folder: Path, items: list[NearCopy]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in items:
        path = folder / item.name
        path.write_bytes(item.data)
        paths.append(path)
    return paths
