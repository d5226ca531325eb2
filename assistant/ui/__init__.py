"""The Gradio web UI. Only this package imports gradio.

Callbacks unpack widgets, make one service call and format the result. Per-session
state lives in ``gr.State`` and component values, never in module globals.
"""
from assistant.ui.app import build_ui

__all__ = ["build_ui"]
