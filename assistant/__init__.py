"""Docent's assistant: the facade, chat, prompts, citations, LLM backends, UI, CLI and API."""
