"""A request with many images holds one decoded image at a time, not all of them.

Found by an adversarial run: 28 copies of a 49 KB 70,000×707 PNG on ``/v1/vision/similarity``
took the server to 7 GB, because every image was decoded before the first was preprocessed.
``RequestImages`` decodes, preprocesses and drops each image in turn; the four multi-image routes
(vision encode and similarity, multimodal encode and match) all read their images through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.image_corpus import png_of_size

REPO_ROOT = Path(__file__).resolve().parents[2]
COPIES = 16
WIDTH, HEIGHT = 6000, 600  # 3.6 MP: about 10 MB of RGB per decoded copy

# Peak memory from the child's own VmHWM, reset just before the work (ru_maxrss is inherited
# across fork/exec). "streamed" is the route's path; "all_at_once" is the old one, the control.
PROBE = textwrap.dedent(
    """
    import json, sys
    from vizdex.encoders.loading import load_encoder
    from vizdex.encoders.settings import EncoderSettings
    from vizdex.imaging import ImageInputSettings, load_image
    from vizdex.web.inputs import RequestImages

    def status_kb(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise LookupError(field)

    model, image, way, copies = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    encoder = load_encoder(model, EncoderSettings(models=(model,), device="cpu", batch_size=8))
    encoder.encode_images([load_image(open(image, "rb").read(), ImageInputSettings()).image])
    items = [open(image, "rb").read() for _ in range(copies)]
    settings = ImageInputSettings()
    before = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    if way == "streamed":
        vectors = RequestImages(items, settings).vectors(encoder)
    else:
        decoded = [load_image(item, settings, min_side=encoder.decode_min_side).image
                   for item in items]
        vectors = encoder.encode_images(decoded)
    peak = status_kb("VmHWM")
    print(json.dumps({"rows": len(vectors), "peak_mb": (peak - before) / 1024}))
    """
)


def _peak_mb(model: Path, image: Path, way: str, copies: int = COPIES) -> float:
    # A fixed mmap threshold returns every freed bitmap to the kernel at once: with glibc's
    # dynamic one, freed bitmaps stay cached in the heap and the high-water mark would measure
    # the allocator's cache (it flipped this test) instead of what the code keeps alive.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MALLOC_MMAP_THRESHOLD_": "131072"}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(model), str(image), way, str(copies)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["rows"] == copies
    return float(report["peak_mb"])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_many_large_images_cost_one_decoded_image(tiny_clip_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "wide.png"
    image.write_bytes(png_of_size(WIDTH, HEIGHT))
    one_decoded_mb = WIDTH * HEIGHT * 3 / 2**20
    control = _peak_mb(tiny_clip_dir, image, "all_at_once")
    streamed = _peak_mb(tiny_clip_dir, image, "streamed")
    streamed_few = _peak_mb(tiny_clip_dir, image, "streamed", copies=2)
    # The control proves the probe sees decoded bitmaps: all copies alive at once.
    assert control > COPIES * one_decoded_mb * 0.9, control
    # The route's path: one decoded copy and its resize at a time, whatever the count ...
    assert streamed < 6 * one_decoded_mb, (streamed, control)
    # ... so more images cost only their model-sized pixel rows (all at once: a bitmap each).
    row_mb = 3 * 224 * 224 * 4 / 2**20
    more = COPIES - 2
    assert streamed - streamed_few < more * row_mb + one_decoded_mb, (streamed, streamed_few)
