"""Which copy of a near-duplicate group to keep: one documented rule per ``prefer`` value.

Every rule ends in the same tie-breaks, so the suggestion is stable: the default prefers the
best picture (most pixels), then the fuller file (largest), then the first one kept (oldest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from vizdex.search.records import ImageRecord


class KeeperRule(StrEnum):
    PIXELS = "pixels"  # most pixels, then largest file, then oldest
    FILE_SIZE = "file_size"  # largest file, then most pixels, then oldest
    OLDEST = "oldest"  # added to the collection first, then most pixels, then largest file
    NEWEST = "newest"  # added last, then most pixels, then largest file
    REPRESENTATIVE = "representative"  # the group's most typical copy, then as ``pixels``


KEEPER_RULES = tuple(rule.value for rule in KeeperRule)


def _moment(value: datetime) -> float:
    return value.timestamp()


def _key(rule: KeeperRule, representative: int) -> Callable[[ImageRecord], tuple[Any, ...]]:
    def key(image: ImageRecord) -> tuple[Any, ...]:
        pixels = image.width * image.height
        created = _moment(image.created_at)
        if rule is KeeperRule.FILE_SIZE:
            return (-image.byte_size, -pixels, created, image.id)
        if rule is KeeperRule.OLDEST:
            return (created, -pixels, -image.byte_size, image.id)
        if rule is KeeperRule.NEWEST:
            return (-created, -pixels, -image.byte_size, image.id)
        first = image.id != representative if rule is KeeperRule.REPRESENTATIVE else False
        return (first, -pixels, -image.byte_size, created, image.id)

    return key


def choose_keeper(
    members: Sequence[ImageRecord], rule: KeeperRule = KeeperRule.PIXELS, *, representative: int
) -> int:
    """The id of the member ``rule`` keeps (the last tie-break, the smaller id, is never tied)."""
    if not members:
        raise ValueError("a group has members")
    return min(members, key=_key(KeeperRule(rule), representative)).id
