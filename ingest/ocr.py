"""OCR with Tesseract (``pytesseract`` + Debian's ``tesseract-ocr``), when installed.

Orientation is detected first (OSD) and the image turned upright; the language models
are chosen from the detected script among those installed: Latin -> English (+
Vietnamese), Han -> Simplified + Traditional Chinese.
"""
from __future__ import annotations

import logging
import re
import shutil
from functools import lru_cache

from ingest.errors import IngestError

log = logging.getLogger(__name__)

INSTALL_HINT = ("install Tesseract to read it (`make setup` does this as root; or "
                "`apt-get install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-chi-tra "
                "tesseract-ocr-vie`)")


@lru_cache(maxsize=1)
def installed_languages() -> frozenset[str]:
    if not shutil.which("tesseract"):
        return frozenset()
    try:
        import pytesseract

        return frozenset(pytesseract.get_languages(config=""))
    except Exception as exc:  # a broken install counts as none
        log.warning("Tesseract is present but unusable: %s", exc)
        return frozenset()


def available() -> bool:
    return "eng" in installed_languages()


def _languages_for(script: str) -> str:
    have = installed_languages()
    wanted = {"Han": ["chi_sim", "chi_tra"], "Latin": ["eng", "vie"]}.get(script, ["eng"])
    chosen = [lang for lang in wanted if lang in have] or ["eng"]
    return "+".join(chosen)


MIN_SIDE = 1600  # low-resolution scans are upscaled before OCR
ROTATE_CONFIDENCE = 1.5
SCRIPT_CONFIDENCE = 2.0


def prepare(image):
    """Grey, on white (transparent scans), upscaled so text is ~30 px high."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        background.alpha_composite(image)
        image = background
    image = image.convert("L")
    short = min(image.size)
    if short < MIN_SIDE:
        factor = 2000 / short
        image = image.resize((int(image.width * factor), int(image.height * factor)), Image.LANCZOS)
    return image


def _orientation(image) -> tuple[int, str]:
    """(degrees to turn clockwise, script) from Tesseract's OSD, each only when OSD is
    confident; (0, 'Latin') otherwise."""
    import pytesseract

    if "osd" not in installed_languages():
        return 0, "Latin"
    try:
        osd = pytesseract.image_to_osd(image)
    except Exception:  # too little text to decide
        return 0, "Latin"
    def num(key: str, default: float = 0.0) -> float:
        m = re.search(rf"{key}:\s*([\d.]+)", osd)
        return float(m.group(1)) if m else default

    rotate = int(num("Rotate")) if num("Orientation confidence") >= ROTATE_CONFIDENCE else 0
    script = re.search(r"Script:\s*(\w+)", osd)
    confident = script and num("Script confidence") >= SCRIPT_CONFIDENCE
    return rotate, (script.group(1) if confident else "Latin")


def ocr_image(image) -> str:
    """Text of a PIL image. Raises ``IngestError`` when Tesseract is not installed."""
    if not available():
        raise IngestError(f"Scanned image: {INSTALL_HINT}.")
    import pytesseract

    image = prepare(image)
    rotate, script = _orientation(image)
    if rotate:
        image = image.rotate(-rotate, expand=True)
    return pytesseract.image_to_string(image, lang=_languages_for(script))
