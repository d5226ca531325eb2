"""Images (PNG, JPEG, TIFF with several pages) read by OCR."""
from __future__ import annotations

from pathlib import Path

from ingest import ocr
from ingest.errors import IngestError
from ingest.loaders import register
from ingest.quality import normalize
from ingest.types import LoadedDocument, Page


@register(".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
def load_image(path: Path, source: str, password: str | None = None) -> LoadedDocument:
    if not ocr.available():
        raise IngestError(f"Image file: {ocr.INSTALL_HINT}.")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
        frames = [frame.copy() for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise IngestError(f"Not a readable image ({exc}).") from exc
    pages = tuple(Page(i, normalize(ocr.ocr_image(f)), method="ocr")
                  for i, f in enumerate(frames, start=1))
    warnings = () if any(p.text for p in pages) else ("OCR found no text in the image.",)
    return LoadedDocument(source, "image", pages, warnings)
