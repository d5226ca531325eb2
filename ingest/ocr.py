"""OCR with Tesseract (``pytesseract`` + Debian's ``tesseract-ocr``), when installed.

Orientation is detected first (OSD) and the image turned upright; the language models
are chosen from the detected script among those installed: Latin -> English (+
Vietnamese), Han -> Simplified + Traditional Chinese. OSD is often unsure of the script
on a short page (a Chinese leaflet scored 0.54), and reading Chinese with the English
model gives confident-looking Latin garbage, so an unsure script is settled by reading
the page with each script's models and keeping the reading Tesseract itself is surest of
(its mean word confidence; 91 against 33 on that leaflet, 96 against 88 on an English
label).
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache

from common.text import HAN_RANGE
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


SCRIPTS = {"Han": ["chi_sim", "chi_tra"], "Latin": ["eng", "vie"]}


def _languages_for(script: str) -> str:
    have = installed_languages()
    wanted = SCRIPTS.get(script, ["eng"])
    chosen = [lang for lang in wanted if lang in have] or ["eng"]
    return "+".join(chosen)


MIN_SIDE = 1600  # low-resolution scans are upscaled before OCR
ROTATE_CONFIDENCE = 1.5
SCRIPT_CONFIDENCE = 2.0
SURE_READING = 85.0  # mean word confidence at which a reading is kept without trying others


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


def _orientation(image) -> tuple[int, str, bool]:
    """(degrees to turn clockwise, script, whether OSD is sure of the script); the turn
    only when OSD is confident of it; (0, 'Latin', False) when OSD cannot tell."""
    import pytesseract

    if "osd" not in installed_languages():
        return 0, "Latin", False
    try:
        osd = pytesseract.image_to_osd(image)
    except Exception:  # too little text to decide
        return 0, "Latin", False

    def num(key: str, default: float = 0.0) -> float:
        m = re.search(rf"{key}:\s*([\d.]+)", osd)
        return float(m.group(1)) if m else default

    rotate = int(num("Rotate")) if num("Orientation confidence") >= ROTATE_CONFIDENCE else 0
    script = re.search(r"Script:\s*(\w+)", osd)
    name = script.group(1) if script else "Latin"
    return rotate, name, bool(script) and num("Script confidence") >= SCRIPT_CONFIDENCE


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float  # Tesseract's mean word confidence, weighted by length (0-100)
    languages: str


_CJK = re.compile(f"[\u3000-\u30ff{HAN_RANGE}\uff00-\uffef]")  # with CJK and full-width punctuation


def _read(image, languages: str) -> Reading:
    """The page's text in reading order (lines and paragraphs as Tesseract found them;
    no space between two Chinese words) with Tesseract's confidence in it."""
    import pytesseract

    data = pytesseract.image_to_data(image, lang=languages,
                                     output_type=pytesseract.Output.DICT)
    lines: dict[tuple[int, int, int], list[str]] = {}
    weight = total = 0.0
    for i, word in enumerate(data["text"]):
        conf = float(data["conf"][i])
        if not word.strip() or conf < 0:
            continue
        key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
        lines.setdefault(key, []).append(word.strip())
        weight += len(word) * conf
        total += len(word)
    paragraphs: dict[tuple[int, int], list[str]] = {}
    for (block, par, _), words in lines.items():
        line = words[0]
        for word in words[1:]:
            glue = "" if _CJK.match(line[-1]) and _CJK.match(word[0]) else " "
            line += glue + word
        paragraphs.setdefault((block, par), []).append(line)
    text = "\n\n".join("\n".join(ls) for ls in paragraphs.values())
    return Reading(text, weight / total if total else 0.0, languages)


def ocr_image(image) -> str:
    """Text of a PIL image. Raises ``IngestError`` when Tesseract is not installed."""
    if not available():
        raise IngestError(f"Scanned image: {INSTALL_HINT}.")
    image = prepare(image)
    rotate, script, sure = _orientation(image)
    if rotate:
        image = image.rotate(-rotate, expand=True)
    if sure:
        return _read(image, _languages_for(script)).text
    # OSD's guess first; the other scripts only when that reading is not convincing
    candidates = dict.fromkeys(_languages_for(s) for s in [script, *SCRIPTS])
    best = None
    for languages in candidates:
        reading = _read(image, languages)
        if best is None or reading.confidence > best.confidence:
            best = reading
        if best.confidence >= SURE_READING:
            break
    log.info("OCR: script %s unsure, read with %s (confidence %.0f)", script,
             best.languages, best.confidence)
    return best.text
