"""The citations under the chat: one clickable entry per source of an answer; a click
shows the passage with the quote highlighted, the file and page, and the PDF page."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from PIL import Image

from common.errors import DocentError
from assistant.core import Assistant
from assistant.types import Citation
from assistant.ui.format import citation_choices, citation_html

log = logging.getLogger(__name__)
HINT = "Click a source to see the passage and its page."


@dataclass(frozen=True)
class CitationsPanel:
    choices: gr.Radio
    passage: gr.HTML
    page: gr.Image

    @property
    def outputs(self) -> list:
        return [self.choices, self.passage, self.page]


def build_citations_panel(assistant: Assistant, cites_state: gr.State,
                          chatbot: gr.Chatbot) -> CitationsPanel:
    """``cites_state`` holds, for each answer of the open conversation, its citations."""
    choices = gr.Radio(label="Sources of the last answer", choices=[], info=HINT,
                       elem_id="citations", interactive=True)
    with gr.Row():
        passage = gr.HTML(elem_id="citation-text")
        page = gr.Image(label="Page", type="pil", format="png", interactive=False,
                        visible=False, elem_id="citation-page", height=620)
    panel = CitationsPanel(choices, passage, page)

    def show(choice: str | None, cites: list):
        citation = _picked(choice, cites)
        if citation is None:
            return "", gr.Image(value=None, visible=False)
        try:
            view = assistant.chat.citation(citation.chunk_id, citation.kb, citation.quote)
        except DocentError as exc:
            return f"<p>⚠️ {exc}</p>", gr.Image(value=None, visible=False)
        image = _load(view.page_image)
        return citation_html(view), gr.Image(value=image, visible=image is not None,
                                             label=f"{view.label}")

    def pick_answer(cites: list, evt: gr.SelectData):
        """Clicking a message of the chat lists the sources of that answer."""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        turn = int(index) // 2 if isinstance(index, int) else len(cites) - 1
        return show_turn(cites, turn)

    choices.input(show, [choices, cites_state], [passage, page], api_name=False)
    chatbot.select(pick_answer, [cites_state], panel.outputs, api_name=False)
    return panel


def show_turn(cites: Sequence[Sequence[Citation]], turn: int | None = None) -> tuple:
    """Updates of the panel listing the citations of answer ``turn`` (default: the last)."""
    turn = len(cites) - 1 if turn is None else turn
    if not 0 <= turn < len(cites):
        return (gr.Radio(choices=[], value=None, label="Sources of the last answer"), "",
                gr.Image(value=None, visible=False))
    label = ("Sources of the last answer" if turn == len(cites) - 1
             else f"Sources of answer {turn + 1}")
    return (gr.Radio(choices=citation_choices(cites[turn], turn), value=None, label=label),
            "" if cites[turn] else "<p><em>This answer cites no source.</em></p>",
            gr.Image(value=None, visible=False))


def _picked(choice: str | None, cites: Sequence[Sequence[Citation]]) -> Citation | None:
    try:
        turn, index = (int(x) for x in (choice or "").split(":"))
        return cites[turn][index]
    except (ValueError, IndexError):
        return None


def _load(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        log.warning("Could not read the rendered page %s: %s", path, exc)
        return None
