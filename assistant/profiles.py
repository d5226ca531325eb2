"""A knowledge base's profile: its declared scope, the system prompt the user may edit,
and the medical care rules (disclaimer, urgent-symptom advice, no uncited dosing).

Stored as ``profile.json`` in the knowledge base's folder, versioned. A knowledge base
with no profile file gets the settings' default profile (``answers.default_profile``).

>>> p = preset("medical")
>>> p.scope, p.medical, bool(p.disclaimer)
('medical', True, True)
>>> preset("general").scope
''
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from assistant.prompts import SYSTEM_PROMPT

FORMAT = 1
FILE = "profile.json"

MEDICAL_SUBJECT = "health and medicine: diseases, symptoms, medicines, treatments, tests and care"
MEDICAL_DISCLAIMER = ("Docent answers from your documents and is not a doctor: check "
                      "medical decisions with a health professional.")


@dataclass(frozen=True)
class Profile:
    """What a knowledge base is for and how its answers are framed.

    ``scope``: a short name ("medical") or "" for any subject. ``subject``: words that
    describe the scope, used to tell in-scope questions from others. ``system_prompt``:
    the answering instructions (editable). ``medical``: disclaimer line, urgent-symptom
    advice and no dosing or diagnosis without a cited source.
    """

    scope: str = ""
    subject: str = ""
    system_prompt: str = SYSTEM_PROMPT
    disclaimer: str = ""
    medical: bool = False

    def __post_init__(self):
        if self.scope and not self.subject.strip():
            raise ValueError(f"Scope {self.scope!r} needs a subject: a few words that "
                             "describe what belongs to it.")
        if not self.system_prompt.strip():
            raise ValueError("The system prompt is empty: write the answering instructions, "
                             "or reset it to the default.")
        if len(self.system_prompt) > 8000:
            raise ValueError("The system prompt is longer than 8,000 characters.")


PRESETS = {
    "general": Profile(),
    "medical": Profile("medical", MEDICAL_SUBJECT, SYSTEM_PROMPT, MEDICAL_DISCLAIMER, True),
}


def preset(name: str) -> Profile:
    if name not in PRESETS:
        raise ValueError(f"Unknown profile {name!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def load_profile(kb_root: Path, default: Profile) -> Profile:
    path = kb_root / FILE
    if not path.is_file():
        return default
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format", 0) > FORMAT:
        raise ValueError(f"{path} was written by a newer Docent (format {data['format']}).")
    fields = {k: v for k, v in data.items() if k in Profile.__dataclass_fields__}
    return replace(default, **fields)


def save_profile(kb_root: Path, profile: Profile) -> None:
    """Write atomically: a crash leaves the old profile or the new one, never half."""
    path = kb_root / FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **asdict(profile)}, ensure_ascii=False,
                              indent=2), encoding="utf-8")
    os.replace(tmp, path)
