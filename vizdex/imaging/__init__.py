"""The image door: every image vizdex reads (upload, file, URL) passes through here.

Torch-free; encoders, the indexer and the web all use it. Modules, in the order an input meets
them: ``inputs`` (bytes, base64, ``data:`` URLs, URLs via ``fetch``, paths via ``paths``, all under
the byte cap) → ``formats`` (magic bytes against the one format registry) → ``decode`` (header,
pixel cap, decode) → ``pixels`` (EXIF orientation, 8-bit RGB). ``settings`` holds the limits.
"""

from vizdex.imaging.decode import (
    DecodedImage,
    decode_file,
    decode_image_bytes,
    load_image,
    read_header,
)
from vizdex.imaging.fetch import fetch_url, split_url
from vizdex.imaging.formats import (
    ACCEPTED_FORMATS,
    FORMATS,
    SCAN_EXTENSIONS,
    ImageFormat,
    file_extension,
    media_type,
    sniff_format,
)
from vizdex.imaging.inputs import read_input
from vizdex.imaging.paths import resolve_allowed_path
from vizdex.imaging.pixels import exif_orientation, to_rgb
from vizdex.imaging.settings import ImageInputSettings, format_bytes, format_megapixels

__all__ = [
    "ACCEPTED_FORMATS",
    "FORMATS",
    "SCAN_EXTENSIONS",
    "DecodedImage",
    "ImageFormat",
    "ImageInputSettings",
    "decode_file",
    "decode_image_bytes",
    "exif_orientation",
    "fetch_url",
    "file_extension",
    "format_bytes",
    "format_megapixels",
    "load_image",
    "media_type",
    "read_header",
    "read_input",
    "resolve_allowed_path",
    "sniff_format",
    "split_url",
    "to_rgb",
]
