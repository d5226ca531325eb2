"""The knowledge base's profile (Knowledge tab): preset, scope subject, the editable
system prompt, the disclaimer; saved with ``Documents.set_profile``."""
from __future__ import annotations

import logging
from dataclasses import replace

import gradio as gr

from common.errors import DocentError
from assistant.core import Assistant
from assistant.profiles import PRESETS, Profile

log = logging.getLogger(__name__)
CUSTOM = "custom"


def preset_name(profile: Profile) -> str:
    """The preset a profile follows (same scope and medical rules), else "custom".

    >>> preset_name(PRESETS["medical"]), preset_name(Profile("law", "contracts"))
    ('medical', 'custom')
    """
    return next((name for name, p in PRESETS.items()
                 if (p.scope, p.medical) == (profile.scope, profile.medical)), CUSTOM)


def profile_from_form(name: str, loaded: Profile, subject: str, prompt: str,
                      disclaimer: str) -> Profile:
    """The profile the form describes: the preset's scope and medical rules ("custom"
    keeps the loaded ones) with the edited texts. Raises ``ValueError`` when invalid."""
    base = loaded if name == CUSTOM else PRESETS[name]
    return replace(base, subject=(subject or "").strip(), system_prompt=prompt or "",
                   disclaimer=(disclaimer or "").strip())


def _describe(p: Profile) -> str:
    scope = f"scope **{p.scope}**" if p.scope else "any subject"
    rules = "; medical rules on (disclaimer, urgent-symptom advice, no uncited dosing)" \
        if p.medical else ""
    return scope + rules


def build_profile_panel(demo: gr.Blocks, assistant: Assistant, kb_choice: gr.Dropdown) -> None:
    loaded = gr.State(PRESETS["general"])
    with gr.Accordion("Profile: what this knowledge base is for, and how it answers",
                      open=False, elem_id="profile-panel"):
        preset = gr.Radio([*PRESETS, CUSTOM], value="general", label="Preset",
                          elem_id="profile-preset",
                          info="medical: health questions only, with the medical rules; "
                               "general: any subject; custom: as set from the command line")
        subject = gr.Textbox(label="Scope subject (what questions belong here)", lines=2,
                             elem_id="profile-subject")
        prompt = gr.Textbox(label="System prompt (the answering instructions)", lines=8,
                            max_lines=24, elem_id="profile-prompt")
        disclaimer = gr.Textbox(label="Disclaimer shown with answers", lines=2,
                                elem_id="profile-disclaimer")
        with gr.Row():
            save = gr.Button("Save profile", variant="primary", elem_id="profile-save")
            reset = gr.Button("Reset prompt to default", elem_id="profile-reset")
        status = gr.Markdown(elem_id="profile-status")

    def load(kb: str):
        try:
            p = assistant.documents.profile(kb or None)
        except (DocentError, ValueError, OSError) as exc:
            return (gr.skip(),) * 5 + (f"⚠️ Could not read the profile: {exc}",)
        return (p, preset_name(p), p.subject, p.system_prompt, p.disclaimer,
                f"Current profile: {_describe(p)}.")

    def pick(name: str, current: Profile):
        """A preset fills in its subject and disclaimer (the prompt is left as edited)."""
        p = current if name == CUSTOM else PRESETS[name]
        return p.subject, p.disclaimer

    def reset_prompt(name: str, current: Profile):
        return (current if name == CUSTOM else PRESETS[name]).system_prompt

    def store(kb: str, name: str, current: Profile, subj: str, text: str, disc: str):
        try:
            p = profile_from_form(name, current, subj, text, disc)
            assistant.documents.set_profile(p, kb or None)
        except ValueError as exc:
            return gr.skip(), f"⚠️ Not saved: {exc}"
        except (DocentError, OSError) as exc:
            log.warning("Could not save the profile of %s: %s", kb, exc)
            return gr.skip(), f"⚠️ Could not save the profile: {exc}"
        name = kb or assistant.settings.default_kb
        return p, f"✅ Saved the profile of **{name}**: {_describe(p)}."

    fields = [loaded, preset, subject, prompt, disclaimer, status]
    preset.input(pick, [preset, loaded], [subject, disclaimer], api_name=False)
    reset.click(reset_prompt, [preset, loaded], [prompt], api_name=False)
    save.click(store, [kb_choice, preset, loaded, subject, prompt, disclaimer],
               [loaded, status], api_name=False)
    kb_choice.change(load, [kb_choice], fields, api_name=False)
    demo.load(load, [kb_choice], fields, api_name=False)
