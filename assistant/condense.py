"""Turn a follow-up question into a standalone search query using the chat history.

"And for children?" after "What is the usual dose of paracetamol?" must search for the
paracetamol dose for children. The LLM rewrites the question only when there is a
history. Its reply (the first line) is checked before it is used (``assistant.step_checks``):
an empty, overlong or topic-changing rewrite is rejected and the question itself is used.

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
    # whatever it is, it goes to the checks (``assistant.step_checks``), which reject an
    # empty or overlong reply and say so in the inference log
    return _LABEL.sub("", line).strip(" \"'“”*")


_TARGET = {"en": "English", "zh": "Chinese", "vi": "Vietnamese"}
# the same three health questions in each language: worked examples show a small model
# what a translation is (it otherwise often answers the question); general on purpose,
# and a constant prefix, so the server's prompt cache keeps them
_EXAMPLES = {
    "en": ["Can people with high blood pressure eat salted vegetables?",
           "What should I do when my child has a high fever at night?",
           "Is it safe to take ibuprofen while pregnant?"],
    "zh": ["高血压患者可以吃咸菜吗？", "孩子晚上发高烧应该怎么办？", "怀孕期间服用布洛芬安全吗？"],
    "vi": ["Người bị cao huyết áp có được ăn dưa muối không?",
           "Con tôi bị sốt cao vào ban đêm thì nên làm gì?",
           "Uống ibuprofen khi đang mang thai có an toàn không?"],
}


def translation_messages(query: str, target: str) -> list[dict]:
    """The chat that asks for ``query`` in ``target``: an instruction, worked examples
    from the other languages, then the query framed the same way."""
    name = _TARGET[target]
    system = (f"You translate health questions into {name}. Reply with the {name} "
              "translation of the question only, as one question. Never answer it.")
    messages = [{"role": "system", "content": system}]
    sources = [lang for lang in _EXAMPLES if lang != target]
    for i, example in enumerate(_EXAMPLES[target]):
        source = _EXAMPLES[sources[i % len(sources)]][i]
        messages += [{"role": "user", "content": f"Translate into {name}: {source}"},
                     {"role": "assistant", "content": example}]
    messages.append({"role": "user", "content": f"Translate into {name}: {query}"})
    return messages


def translate_query(llm, query: str, target: str, max_tokens: int = 96) -> str:
    """``query`` translated into ``target`` ("en", "zh" or "vi"), the language of the
    documents, so that keyword search and a one-language embedder can find them: the
    first line of the reply, to be checked before it is used.

    >>> class ScriptedLLM:
    ...     def __init__(self, reply): self.reply = reply
    ...     def stream_chat(self, messages, max_tokens, temperature): yield self.reply
    ...     def latin_only(self): return self
    >>> translate_query(ScriptedLLM("What should people with high blood pressure eat?"),
    ...                 "高血压患者应该注意什么饮食？", "en")
    'What should people with high blood pressure eat?'
    """
    if target != "zh":
        llm = llm.latin_only()  # no Chinese word left untranslated (held at decoding)
    reply = "".join(llm.stream_chat(translation_messages(query, target), max_tokens, 0.0))
    line = next((ln for ln in reply.strip().splitlines() if ln.strip()), "")
    return re.sub(r"^\s*(?:translation|english|chinese|vietnamese)\s*[:：]\s*", "", line,
                  flags=re.IGNORECASE).strip(" \"'“”*")


def _short(answer: str, limit: int = 300) -> str:
    answer = re.sub(r"\[\d+\]", "", answer).strip()
    return answer if len(answer) <= limit else answer[:limit] + "…"
