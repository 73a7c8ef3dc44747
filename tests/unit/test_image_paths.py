"""Paths through the image door: nothing outside the allowed roots is ever read.

Layout under ``tmp_path/x``::

    data/                  the allowed root
        image.png          a red PNG
        sub/nested.png
        inner_link.png  -> data/image.png       (a symlink that stays inside: fine)
        escape_dir      -> data2                (symlink escapes: refused)
        escape_file.png -> data2/secret.png     (symlink escapes: refused)
        %2e%2e/data2/secret.png                 (a literal directory named "%2e%2e": inside)
    data2/secret.png       a BLUE PNG whose bytes contain SECRET_MARKER (sibling-prefix root)
    secret.txt             SECRET_MARKER
"""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support import image_corpus as corpus
from vizdex.core.errors import ImageRejectedError
from vizdex.imaging import (
    ImageInputSettings,
    decode_file,
    load_image,
    read_input,
    resolve_allowed_path,
)

SECRET_MARKER = b"SECRET-CANARY-7f3a"


@dataclass(frozen=True)
class Tree:
    base: pathlib.Path
    root: pathlib.Path
    sibling: pathlib.Path
    image: bytes
    secret_image: bytes
    settings: ImageInputSettings


def _png_with_marker(colour: tuple[int, int, int]) -> bytes:
    # Bytes after IEND are ignored by decoders, so the marker rides along in a valid image.
    return corpus.encode(corpus.solid("RGB", (8, 8), colour), "PNG") + SECRET_MARKER


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> Tree:
    base = tmp_path / "x"
    root = base / "data"
    sibling = base / "data2"
    (root / "sub").mkdir(parents=True)
    sibling.mkdir()
    image = corpus.encode(corpus.solid("RGB", (8, 8), corpus.RED), "PNG")
    secret_image = _png_with_marker(corpus.BLUE)
    (root / "image.png").write_bytes(image)
    (root / "sub" / "nested.png").write_bytes(image)
    (sibling / "secret.png").write_bytes(secret_image)
    (base / "secret.txt").write_bytes(SECRET_MARKER)
    (root / "inner_link.png").symlink_to(root / "image.png")
    (root / "escape_dir").symlink_to(sibling, target_is_directory=True)
    (root / "escape_file.png").symlink_to(sibling / "secret.png")
    literal = root / "%2e%2e" / "data2"
    literal.mkdir(parents=True)
    (literal / "secret.png").write_bytes(image)  # harmless look-alike, inside the root
    settings = ImageInputSettings(allowed_roots=(str(root),))
    return Tree(base, root, sibling, image, secret_image, settings)


def _never_leaks(
    path: str, settings: ImageInputSettings, code: str, *, resolve_too: bool = True
) -> None:
    """The path is refused with ``code`` by every entry point, and no secret byte comes back."""
    attempts: list[Callable[[], object]] = [
        lambda: read_input({"path": path}, settings),
        lambda: load_image({"path": path}, settings),
    ]
    if resolve_too:
        attempts.append(lambda: resolve_allowed_path(path, settings))
    for attempt in attempts:
        try:
            result = attempt()
        except ImageRejectedError as exc:
            assert exc.code == code, (path, exc.code, exc.message)
            assert SECRET_MARKER.decode() not in exc.message
            continue
        pytest.fail(f"{path!r} was not refused: {result!r}"[:300])


ESCAPES = [
    "../data2/secret.png",
    "../secret.txt",
    "sub/../../data2/secret.png",
    "%2e%2e/data2/secret.png",
    "%2E%2E/%2E%2E/x/data2/secret.png",
    "..%2fdata2%2fsecret.png",
    "escape_dir/secret.png",
    "escape_file.png",
    "/etc/passwd",
    "/",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_relative_and_encoded_escapes_are_forbidden(path: str, tree: Tree) -> None:
    _never_leaks(path, tree.settings, "forbidden_path")


def test_absolute_paths_outside_the_root(tree: Tree) -> None:
    for path in (
        tree.sibling / "secret.png",  # /tmp/x/data2 must not pass for root /tmp/x/data
        tree.base / "secret.txt",
        tree.root.parent,
        pathlib.Path(str(tree.root) + "2") / "secret.png",
    ):
        _never_leaks(str(path), tree.settings, "forbidden_path")
    _never_leaks(f"{tree.root}/../data2/secret.png", tree.settings, "forbidden_path")
    _never_leaks(f"{tree.root}/%2e%2e/data2/secret.png", tree.settings, "forbidden_path")


def test_double_encoding_is_decoded_once_and_stays_inside(tree: Tree) -> None:
    """``%252e%252e`` → ``%2e%2e`` after the one decode: a literal directory name in the root."""
    resolved = resolve_allowed_path("%252e%252e/data2/secret.png", tree.settings)
    assert resolved == tree.root / "%2e%2e" / "data2" / "secret.png"
    assert read_input({"path": "%252e%252e/data2/secret.png"}, tree.settings) == tree.image
    _never_leaks("%252e%252e/nothing-here.png", tree.settings, "not_found")


@pytest.mark.parametrize("path", ["image.png\x00.jpg", "image.png%00.jpg", "\x00", "%00"])
def test_nul_bytes_are_forbidden(path: str, tree: Tree) -> None:
    _never_leaks(path, tree.settings, "forbidden_path")


@pytest.mark.parametrize("path", ["%ff%fe.png", "", "   "])
def test_unusable_paths_are_forbidden(path: str, tree: Tree) -> None:
    _never_leaks(path, tree.settings, "forbidden_path")


def test_no_roots_means_no_paths(tree: Tree) -> None:
    settings = ImageInputSettings()
    for path in ("image.png", str(tree.root / "image.png"), "/etc/passwd"):
        _never_leaks(path, settings, "forbidden_path")


@pytest.mark.parametrize("path", ["missing.png", "sub/missing.png", "sub", ".", "sub/"])
def test_missing_or_not_a_file_inside_the_root(path: str, tree: Tree) -> None:
    _never_leaks(path, tree.settings, "not_found")


def test_fifo_inside_the_root_is_refused_without_hanging(tree: Tree) -> None:
    os.mkfifo(tree.root / "pipe.png")
    outcome: list[BaseException | None] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            _capture(lambda: read_input({"path": "pipe.png"}, tree.settings))
        ),
        daemon=True,
    )
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "reading a FIFO hung"
    assert isinstance(outcome[0], ImageRejectedError) and outcome[0].code == "not_found"


def _capture(action: object) -> BaseException | None:
    try:
        action()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    return None


@pytest.mark.parametrize(
    "path", ["image.png", "sub/nested.png", "./sub/../image.png", "inner_link.png", "im%61ge.png"]
)
def test_allowed_relative_paths(path: str, tree: Tree) -> None:
    assert read_input({"path": path}, tree.settings) == tree.image
    decoded = load_image({"path": path}, tree.settings)
    assert decoded.image.getpixel((0, 0)) == corpus.RED


def test_allowed_absolute_path(tree: Tree) -> None:
    path = tree.root / "sub" / "nested.png"
    assert resolve_allowed_path(str(path), tree.settings) == path
    assert read_input({"path": str(path)}, tree.settings) == tree.image


def test_root_given_through_a_symlink(tree: Tree) -> None:
    link = tree.base / "root_link"
    link.symlink_to(tree.root, target_is_directory=True)
    settings = ImageInputSettings(allowed_roots=(str(link),))
    assert read_input({"path": "image.png"}, settings) == tree.image
    assert read_input({"path": str(link / "image.png")}, settings) == tree.image
    _never_leaks("../data2/secret.png", settings, "forbidden_path")


def test_several_roots(tree: Tree) -> None:
    settings = ImageInputSettings(allowed_roots=(str(tree.root / "sub"), str(tree.root)))
    assert read_input({"path": "image.png"}, settings) == tree.image  # found in the second root
    assert read_input({"path": "nested.png"}, settings) == tree.image  # found in the first


def test_file_swapped_for_a_symlink_after_resolving_is_refused(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race between the check and the open: the final component becomes a symlink out."""
    import vizdex.imaging.paths as images

    victim = tree.root / "swap.png"
    victim.write_bytes(tree.image)
    real_resolve = images.resolve_allowed_path

    def resolve_then_swap(path: str, settings: ImageInputSettings) -> pathlib.Path:
        resolved = real_resolve(path, settings)
        victim.unlink()
        victim.symlink_to(tree.sibling / "secret.png")
        return resolved

    monkeypatch.setattr(images, "resolve_allowed_path", resolve_then_swap)
    _never_leaks_once(lambda: read_input({"path": "swap.png"}, tree.settings), "forbidden_path")


def test_directory_swapped_for_a_symlink_after_resolving_is_refused(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race one level up, which O_NOFOLLOW alone cannot see."""
    import vizdex.imaging.paths as images

    folder = tree.root / "swapdir"
    folder.mkdir()
    (folder / "secret.png").write_bytes(tree.image)
    real_resolve = images.resolve_allowed_path

    def resolve_then_swap(path: str, settings: ImageInputSettings) -> pathlib.Path:
        resolved = real_resolve(path, settings)
        (folder / "secret.png").unlink()
        folder.rmdir()
        folder.symlink_to(tree.sibling, target_is_directory=True)
        return resolved

    monkeypatch.setattr(images, "resolve_allowed_path", resolve_then_swap)
    _never_leaks_once(
        lambda: read_input({"path": "swapdir/secret.png"}, tree.settings), "forbidden_path"
    )


def _never_leaks_once(action: object, code: str) -> None:
    outcome = _capture(action)
    assert isinstance(outcome, ImageRejectedError), outcome
    assert outcome.code == code


def test_byte_cap_is_checked_from_the_file_size(tree: Tree) -> None:
    settings = ImageInputSettings(allowed_roots=(str(tree.root),), max_bytes=len(tree.image) - 1)
    _never_leaks("image.png", settings, "too_large", resolve_too=False)


def test_empty_file(tree: Tree) -> None:
    (tree.root / "empty.png").write_bytes(b"")
    _never_leaks("empty.png", tree.settings, "empty", resolve_too=False)


# --- decode_file: files the operator chose -----------------------------------------------------


def test_decode_file_needs_no_roots(tree: Tree) -> None:
    decoded = decode_file(tree.sibling / "secret.png", ImageInputSettings())
    assert decoded.image.getpixel((0, 0)) == corpus.BLUE
    assert decoded.byte_size == len(tree.secret_image)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("missing.png", "not_found"),
        ("sub", "not_found"),
        ("empty.png", "empty"),
        ("text.png", "unsupported_format"),
        ("pipe.png", "not_found"),
    ],
)
def test_decode_file_refusals(name: str, code: str, tree: Tree) -> None:
    (tree.root / "empty.png").write_bytes(b"")
    (tree.root / "text.png").write_bytes(b"hello")
    os.mkfifo(tree.root / "pipe.png")
    with pytest.raises(ImageRejectedError) as caught:
        decode_file(str(tree.root / name), ImageInputSettings())
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("name", "says"),
    [("a\x00b.png", "cannot hold a NUL byte"), ("loop.png", "leads back to itself")],
)
def test_decode_file_refuses_unusable_names_with_a_reason(name: str, says: str, tree: Tree) -> None:
    """Found by the hardening round through `vizdex search --image`: a NUL byte was an internal
    error (ValueError), a looping link "became a symbolic link while being opened"."""
    os.symlink(tree.root / "loop.png", tree.root / "loop.png")
    with pytest.raises(ImageRejectedError) as caught:
        decode_file(str(tree.root / name), ImageInputSettings())
    assert caught.value.code == "not_found" and says in caught.value.message


def test_decode_file_checks_size_before_reading(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tree.root / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(60_000_000)  # sparse: 60 MB on paper, nothing to read
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counting_read)
    with pytest.raises(ImageRejectedError) as caught:
        decode_file(big, ImageInputSettings())
    assert caught.value.code == "too_large"
    assert caught.value.message.endswith("is 60 MB; the limit is 50 MB")
    assert reads == []


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    """No test leaves a thread behind (e.g. one stuck reading a FIFO): it would fail here."""
    before = set(threading.enumerate())
    yield
    leftover = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leftover:
        thread.join(5)  # one that is merely finishing gets the chance to
    stuck = [t.name for t in leftover if t.is_alive()]
    assert not stuck, f"threads still running after the test: {stuck}"
