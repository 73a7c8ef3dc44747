"""A tiny CLIP trained for a few seconds on drawn scenes, so retrieval quality means something.

Random weights retrieve nothing by text, so a precision that damaged text retrieval would go
unseen. This model learns twelve captions ("a red disc", "a blue ring", "a green bar", ...) from
scenes of one coloured shape on a dim, varied background. Its gallery (fresh seeds, never
trained on) is what the retrieval-quality tests rank: text queries by caption, and reverse
lookups by a re-encoded, slightly rescaled copy of each gallery image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from transformers import CLIPImageProcessor, CLIPModel

from tests.support.tiny_models import _spread_weights, _tiny_tokenizer, tiny_clip_config

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 40),
}
SHAPES = ("disc", "ring", "bar")
CLASSES: list[tuple[str, str]] = [(colour, shape) for colour in COLOURS for shape in SHAPES]
IMAGE_SIZE = 64
GALLERY_PER_CLASS = 10
GALLERY_SEED = 10_000
LEARNING_RATE = 5e-3  # gallery seeds start here; training seeds stay below


def caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def scene(colour: str, shape: str, seed: int, size: int = 64) -> Image.Image:
    """One shape of ``colour`` at a random place and size on a dim gradient with grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tint = rng.uniform(20, 90, size=3)
    base = tint + 40 * np.stack([x, y, 1 - x], axis=-1) * rng.uniform(-1, 1, size=3)
    base += rng.normal(0, 6, size=(size, size, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    fill = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in COLOURS[colour])
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(radius / 3)))
    else:  # a bar: as wide as a disc, a third of its height
        draw.rectangle((cx - radius, cy - radius / 3, cx + radius, cy + radius / 3), fill=fill)
    return image


def gallery() -> tuple[list[Image.Image], list[int]]:
    """Scenes never trained on, ``GALLERY_PER_CLASS`` per caption, with their class index."""
    images, labels = [], []
    for label, (colour, shape) in enumerate(CLASSES):
        for k in range(GALLERY_PER_CLASS):
            images.append(scene(colour, shape, GALLERY_SEED + 100 * label + k))
            labels.append(label)
    return images, labels


def lookalike(image: Image.Image) -> Image.Image:
    """What a reverse lookup is asked with: the photo rescaled to 90 % and saved as a JPEG."""
    smaller = image.resize(
        (image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.BILINEAR
    )
    buffer = io.BytesIO()
    smaller.save(buffer, format="JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def make_trained_clip(directory: Path, *, steps: int = 120, seed: int = 0) -> Path:
    """Train a tiny CLIP (2 layers, 32 wide, 64 px) on the twelve captions: ~20 s of one core."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    config = tiny_clip_config(
        tokenizer, image_size=IMAGE_SIZE, patch_size=16, projection_dim=32, max_text_tokens=32
    )
    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    _spread_weights(model, seed, gain=1.0)
    per_class = 16
    images = [
        scene(colour, shape, 100 * label + k)
        for label, (colour, shape) in enumerate(CLASSES)
        for k in range(per_class)
    ]
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = tokenizer([caption(*c) for c in CLASSES], padding=True, return_tensors="pt")
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    model.train()
    threads = torch.get_num_threads()
    # One thread: on tensors this small, a second one mostly spins (3x slower on a busy machine).
    torch.set_num_threads(1)
    try:
        _train(model, optimiser, pixels, tokens, labels, steps)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def _train(
    model: Any,
    optimiser: torch.optim.Optimizer,
    pixels: torch.Tensor,
    tokens: Any,
    labels: torch.Tensor,
    steps: int,
) -> None:
    text_targets = _text_targets(labels, len(CLASSES))
    # Full batches: with tensors this small, time goes per operation, not per image.
    for _ in range(steps):
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(**tokens).pooler_output
        logits = F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
        logits = logits * model.logit_scale.exp()
        loss = F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, text_targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def _text_targets(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Text -> image targets: each caption's images share its probability mass."""
    one_hot = F.one_hot(labels, classes).float().T
    return one_hot / one_hot.sum(dim=1, keepdim=True).clamp(min=1)
