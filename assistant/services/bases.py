"""The library with its default knowledge base: the one place where "no knowledge base
given" becomes ``settings.default_kb``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.profiles import Profile, load_profile, preset
from knowledge.library import Library

if TYPE_CHECKING:
    from knowledge.base import KnowledgeBase


@dataclass(frozen=True)
class KnowledgeBases:
    library: Library
    default: str  # settings.default_kb
    default_profile: str  # settings.answers.default_profile: the preset of a new profile

    def name(self, kb: str | None) -> str:
        """``kb``, or the default one when none is given.

        >>> KnowledgeBases(None, "default", "general").name("")
        'default'
        """
        return kb or self.default

    def get(self, kb: str | None) -> KnowledgeBase:
        return self.library.get(self.name(kb))

    def names(self, kb: str | Sequence[str] | None) -> list[str]:
        """One name, several, or none (-> the default).

        >>> KnowledgeBases(None, "default", "general").names(["a", "b"])
        ['a', 'b']
        """
        names = [kb] if isinstance(kb, str) else list(kb or [])
        return names or [self.default]

    def profile(self, kb: str | None) -> Profile:
        """``kb``'s scope, system prompt and medical rules (see ``assistant.profiles``)."""
        return load_profile(self.get(kb).root, preset(self.default_profile))
