"""A llama.cpp grammar (GBNF) that makes the model cite while it writes.

Across languages (a Chinese or Vietnamese answer from English sources) a missing ``[n]``
marker cannot be inferred afterwards: the answer shares no words with its source, and
the default embedder does not separate a faithful translation from a neighbouring
passage reliably enough. So the marker is required at decoding time instead:

* every paragraph or list item carries at least one marker; a lead-in line that ends
  with a colon ("症状：") needs none;
* in East Asian text, where sentence ends (。！？) cannot be mistaken for decimals or
  abbreviations, every sentence carries one, before or after its end;
* a marker names one of the sources given to the model (its numbers only), so the
  model chooses *which* source, never *whether* to cite; markers stand together
  ("[1][2]") or after text, never as a list of their own ("[1] [2] [3]").

The text between markers is free, so the model's wording is unconstrained; it only
cannot end a sentence, a line or the answer without pointing at a source.

>>> print(cited_answer_grammar({1, 2}))  # doctest: +NORMALIZE_WHITESPACE
root ::= para ("\\n" "\\n"? para)*
para ::= item? (lead | unit+)
item ::= [-*•] " " | [0-9] [0-9]? [.)] " "
lead ::= [^\\n\\[。！？]+ [:：]
unit ::= seg " "? ref+ [。！？.]? " "?
seg ::= [^\\n\\[。！？ ] [^\\n\\[。！？]* [。！？]?
ref ::= "[" ("1" | "2") "]"
"""
from __future__ import annotations

from collections.abc import Iterable


def cited_answer_grammar(numbers: Iterable[int]) -> str:
    """The GBNF grammar of an answer citing only the sources ``numbers``."""
    choices = " | ".join(f'"{n}"' for n in sorted(set(numbers)))
    if not choices:
        raise ValueError("an answer grammar needs at least one source number")
    stop = "。！？"
    return "\n".join([
        'root ::= para ("\\n" "\\n"? para)*',
        "para ::= item? (lead | unit+)",
        'item ::= [-*•] " " | [0-9] [0-9]? [.)] " "',
        f"lead ::= [^\\n\\[{stop}]+ [:：]",
        f'unit ::= seg " "? ref+ [{stop}.]? " "?',
        f"seg ::= [^\\n\\[{stop} ] [^\\n\\[{stop}]* [{stop}]?",
        f'ref ::= "[" ({choices}) "]"',
    ])
