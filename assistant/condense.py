"""Turn a follow-up question into a standalone search query using the chat history.

"And for children?" after "What is the usual dose of paracetamol?" must search for the
paracetamol dose for children. The LLM rewrites the question only when there is a
history; the rewrite is rejected (the question is kept) when it is empty or much longer
than the turn.

>>> class ScriptedLLM:  # replies with a fixed text
...     def __init__(self, reply): self.reply = reply
...     def stream_chat(self, messages, max_tokens, temperature): yield self.reply
>>> history = [("What is the usual dose of paracetamol?", "500 mg to 1 g every 4-6 hours [1].")]
>>> condense(ScriptedLLM("Paracetamol dose for children?"), history, "And for children?")
'Paracetamol dose for children?'
>>> condense(ScriptedLLM("anything"), [], "What is asthma?")
'What is asthma?'
"""
from __future__ import annotations

import re
from collections.abc import Sequence

SYSTEM = ("You rewrite the user's last question so that it can be understood without the "
          "conversation: replace pronouns and references with what they refer to. Keep the "
          "user's language. Do not answer it. Reply with the rewritten question only.")

_LABEL = re.compile(r"^\s*(?:rewritten question|question|standalone question)\s*[:：]\s*",
                    re.IGNORECASE)


def condense(llm, history: Sequence[tuple[str, str]], question: str, turns: int = 3,
             max_tokens: int = 64) -> str:
    """A standalone version of ``question`` given ``history`` of (question, answer)."""
    if not history:
        return question
    lines = []
    for q, a in list(history)[-turns:]:
        lines += [f"User: {q}", f"Assistant: {_short(a)}"]
    prompt = ("Conversation:\n" + "\n".join(lines) + f"\n\nLast question: {question}\n\n"
              "Rewrite the last question as a standalone question.")
    reply = "".join(llm.stream_chat([{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": prompt}], max_tokens, 0.0))
    line = next((ln for ln in reply.strip().splitlines() if ln.strip()), "")
    rewritten = _LABEL.sub("", line).strip(" \"'“”*")
    if not rewritten or len(rewritten) > 4 * len(question) + 80:
        return question
    return rewritten


_TARGET = {"en": "English", "zh": "Chinese", "vi": "Vietnamese"}


def translate_query(llm, query: str, target: str, max_tokens: int = 96) -> str:
    """``query`` translated into ``target`` ("en", "zh" or "vi"), the language of the
    documents, so that keyword search and a one-language embedder can find them. The
    query is kept when the reply is empty or implausibly long.

    >>> class ScriptedLLM:
    ...     def __init__(self, reply): self.reply = reply
    ...     def stream_chat(self, messages, max_tokens, temperature): yield self.reply
    >>> translate_query(ScriptedLLM("What should people with high blood pressure eat?"),
    ...                 "高血压患者应该注意什么饮食？", "en")
    'What should people with high blood pressure eat?'
    """
    name = _TARGET[target]
    system = (f"You translate search queries into {name}. Reply with the {name} translation "
              "only. Do not answer the question.")
    reply = "".join(llm.stream_chat([{"role": "system", "content": system},
                                     {"role": "user", "content": query}], max_tokens, 0.0))
    line = next((ln for ln in reply.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:translation|english|chinese|vietnamese)\s*[:：]\s*", "", line,
                  flags=re.IGNORECASE).strip(" \"'“”*")
    if not line or len(line) > 4 * len(query) + 80:
        return query
    return line


def _short(answer: str, limit: int = 300) -> str:
    answer = re.sub(r"\[\d+\]", "", answer).strip()
    return answer if len(answer) <= limit else answer[:limit] + "…"
