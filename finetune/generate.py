"""Question-answer training pairs written by the local LLM from a knowledge base's chunks.

Builds on ``finetune.questions`` (the reranker's question generator: same chunk
sampling, prompt and cleaning) and adds the answer step, then filters:

- degenerate repetition: unique-token ratio below 0.2 (question or answer);
- near-duplicates: MinHash (``knowledge.dedup``) of question + answer against kept pairs;
- unsupported answers: less than ``min_support`` of the answer's tokens occur in its chunk.

Optionally adds refusal examples (fixed off-topic questions answered with a polite
refusal in the knowledge base's language) and RAFT-style samples (the question with its
oracle chunk among distractor chunks in the prompt). Each pair keeps its chunk id.

>>> unique_ratio("the the the the the the the the the the")
0.1
>>> round(support("Take 500 mg twice daily.", "Adults take 500 mg of it twice daily with food."), 2)
1.0
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from finetune.data import DatasetRecord, Example, save_dataset
from finetune.evaluate import tokens
from finetune.questions import _LANGUAGE_NAMES, generate_questions, sample_chunks
from knowledge.dedup import NEAR_THRESHOLD, content_hash, jaccard, minhash_signature
from knowledge.tokenize import tokenize
from common.text import detect_language, sentence_spans
from knowledge.types import Chunk

ANSWER_SYSTEM = ("You answer questions from a passage. Answer in one to three sentences, "
                 "using only facts stated in the passage. Reply with the answer only.")
_ANSWER_PREFIX = re.compile(r"^\s*(?:\*\*)?(?:answer|a|答案|答|回答|trả lời)\s*[:：]\s*", re.IGNORECASE)

ANSWER_STYLES = ("written", "quoted")

OFF_TOPIC = {
    "en": (["What is the capital of Australia?", "Can you write me a poem about the sea?",
            "Who won the football World Cup in 2010?", "How do I bake sourdough bread?"],
           "I'm sorry, but that question is outside the documents I can answer from."),
    "zh": (["澳大利亚的首都是哪里？", "你能给我写一首关于大海的诗吗？", "2010年世界杯冠军是谁？",
            "怎么烤酸面包？"], "抱歉，这个问题超出了我可以依据的文档范围。"),
    "vi": (["Thủ đô của Úc là gì?", "Bạn có thể viết cho tôi một bài thơ về biển không?",
            "Đội nào vô địch World Cup 2010?", "Làm bánh mì men tự nhiên thế nào?"],
           "Xin lỗi, câu hỏi này nằm ngoài phạm vi tài liệu mà tôi có thể trả lời."),
}


@dataclass(frozen=True)
class GenerateOptions:
    n: int = 200
    seed: int = 0
    min_unique_ratio: float = 0.2
    min_support: float = 0.5
    refusals: bool = True
    raft_fraction: float = 0.0  # share of pairs given as oracle + distractor chunks
    # "written": the model answers in one to three sentences; "quoted": the answer is the
    # passage's own sentences, kept whole (see ``quote_answer``), where the question is in
    # the passage's language (a cross-lingual question keeps a written answer).
    answer_style: str = "written"
    quote_words: int = 150  # most words in a quoted answer
    distractors: int = 2
    max_answer_tokens: int = 160
    temperature: float = 0.3
    # Questions asked per sampled passage. With two, the held-out split can keep one
    # question of a passage whose other question is trained on, so the closed-book
    # evaluation asks about what the adapter was taught (see finetune.data.heldout_split).
    questions_per_chunk: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.n <= 100_000:
            raise ValueError("Generate between 1 and 100000 pairs.")
        if not 1 <= self.questions_per_chunk <= 5:
            raise ValueError("questions_per_chunk is between 1 and 5.")
        if not 0 <= self.raft_fraction <= 1 or not 0 <= self.min_support <= 1:
            raise ValueError("raft_fraction and min_support are between 0 and 1.")
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(f"answer_style is one of {', '.join(ANSWER_STYLES)}.")
        if not 20 <= self.quote_words <= 1000:
            raise ValueError("quote_words is between 20 and 1000.")


@dataclass(frozen=True)
class GenerationEvent:
    stage: str  # "pairs", "saving", "done"
    index: int
    total: int
    message: str = ""
    kept: int = 0
    dropped: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def fraction(self) -> float:
        return self.index / self.total if self.total else 1.0


# --- filters ---------------------------------------------------------------------------
def unique_ratio(text: str) -> float:
    toks = tokens(text)
    return len(set(toks)) / len(toks) if toks else 0.0


def support(answer: str, chunk_text: str) -> float:
    """Share of the answer's tokens that occur in the chunk."""
    a = tokens(answer)
    if not a:
        return 0.0
    present = set(tokens(chunk_text))
    return sum(t in present for t in a) / len(a)


class NearDuplicates:
    """Exact (normalized hash) and MinHash near-duplicate detection over kept texts."""

    def __init__(self, threshold: float = NEAR_THRESHOLD):
        self.threshold = threshold
        self.hashes: set[str] = set()
        self.signatures: list = []

    def seen(self, text: str) -> bool:
        h = content_hash(text)
        if h in self.hashes:
            return True
        sig = minhash_signature(tokens(text))
        if sig is not None and any(jaccard(sig, s) >= self.threshold for s in self.signatures):
            return True
        self.hashes.add(h)
        if sig is not None:
            self.signatures.append(sig)
        return False


def check_pair(question: str, answer: str, chunk: Chunk, opts: GenerateOptions,
               dedup: NearDuplicates) -> str:
    """"" when the pair is kept, else why it is dropped."""
    if not answer:
        return "no answer"
    if min(unique_ratio(question), unique_ratio(answer)) < opts.min_unique_ratio:
        return "repetitive"
    if support(answer, chunk.index_text) < opts.min_support:
        return "unsupported"
    # A quoted answer is the passage's own text, which two questions about the passage
    # share: only a repeated question is then a duplicate.
    if dedup.seen(question if opts.answer_style == "quoted" else f"{question}\n{answer}"):
        return "duplicate"
    return ""


# --- generation -------------------------------------------------------------------------
def clean_answer(reply: str) -> str:
    return _ANSWER_PREFIX.sub("", reply.strip()).strip(" \"'“”*")


def answer_prompt(chunk: Chunk, question: str, language: str, max_chars: int = 1500) -> list[dict]:
    return [{"role": "system", "content": ANSWER_SYSTEM},
            {"role": "user", "content": f"Passage:\n{chunk.index_text[:max_chars]}\n\n"
                                        f"Question: {question}\n\nAnswer in {language}."}]


def raft_prompt(question: str, oracle: Chunk, distractors: Sequence[Chunk],
                rng: random.Random) -> str:
    docs = [oracle, *distractors]
    rng.shuffle(docs)
    listing = "\n\n".join(f"[{i}] {c.text}" for i, c in enumerate(docs, start=1))
    return f"Documents:\n{listing}\n\nQuestion: {question}"


def generate_pairs(llm, chunks: Sequence[Chunk], opts: GenerateOptions = GenerateOptions(),
                   rag_prompt: RagPrompt | None = None
                   ) -> Generator[GenerationEvent, None, list[Example]]:
    """Progress events per sampled chunk; returns the kept examples (refusals included).
    ``rag_prompt``: how the chat asks with sources (RAFT samples are asked that way)."""
    per = opts.questions_per_chunk
    picked = sample_chunks(chunks, -(-opts.n // per), opts.seed)
    total = min(opts.n, len(picked) * per)
    rng = random.Random(opts.seed)
    dedup, dropped, kept = NearDuplicates(), Counter(), []
    lang = _main_language(picked)
    questions = generate_questions(llm, picked, per_chunk=per)
    for i, gq in zip(range(1, total + 1), questions):
        reason = "no question" if gq is None else ""
        if gq is not None:
            answer = write_answer(llm, gq.question, gq.chunk, opts)
            reason = check_pair(gq.question, answer, gq.chunk, opts, dedup)
            if not reason:
                kept.append(_example(gq.question, answer, gq.chunk, picked, opts, rng,
                                     rag_prompt))
        if reason:
            dropped[reason] += 1
        yield GenerationEvent("pairs", i, total, reason or "kept", len(kept), dict(dropped))
    if opts.refusals and kept:
        kept.extend(refusal_examples(lang, max(2, len(kept) // 20)))
    return kept


def write_answer(llm, question: str, chunk: Chunk, opts: GenerateOptions) -> str:
    """The pair's answer: quoted from the passage (``answer_style`` "quoted", question and
    passage in one language), else written by the model from the passage."""
    passage_language = detect_language(chunk.text)
    if opts.answer_style == "quoted" and detect_language(question) == passage_language:
        return quote_answer(question, chunk.text, opts.quote_words)
    language = _LANGUAGE_NAMES.get(passage_language, "the passage's language")
    reply = "".join(llm.stream_chat(answer_prompt(chunk, question, language),
                                    opts.max_answer_tokens, opts.temperature))
    return clean_answer(reply)


def quote_answer(question: str, passage: str, max_words: int = 150) -> str:
    """The run of whole consecutive sentences of ``passage``, at most ``max_words`` words
    (each Han character counted as a word; a longer first sentence alone), that shares the
    most distinct words with the question (BM25's stemmed words, function words left out);
    the earliest such run, and the longest at equal overlap.

    A quoted answer states only what the passage states, in its words: the adapter learns
    to answer from the sources and fully, where the small model's own answers are short
    and may add what the passage does not say.

    >>> quote_answer("What causes gout?", "Gout is arthritis. It is caused by uric acid. "
    ...              "See a doctor.", 10)
    'Gout is arthritis. It is caused by uric acid.'
    >>> quote_answer("What causes gout?", "See a doctor. Rest helps. Gout is caused by "
    ...              "uric acid.", 8)
    'Rest helps. Gout is caused by uric acid.'
    """
    spans = sentence_spans(passage)
    if not spans:
        return passage.strip()
    asked = set(tokenize(question))
    words = [len(tokens(passage[a:b])) for a, b in spans]  # a Han character counts as one
    shared = [set(tokenize(passage[a:b])) & asked for a, b in spans]
    best, best_key = (0, 0), (-1, -1)
    for i in range(len(spans)):
        seen: set[str] = set()
        total = 0
        for j in range(i, len(spans)):
            total += words[j]
            if total > max_words and j > i:
                break
            seen |= shared[j]
            key = (len(seen), j - i)
            if key > best_key:
                best, best_key = (i, j), key
    return passage[spans[best[0]][0]:spans[best[1]][1]].strip()


# (question, numbered passages) -> the chat's own answer prompt as messages
RagPrompt = Callable[[str, Sequence[Chunk]], list[dict]]


def _example(question: str, answer: str, chunk: Chunk, pool: Sequence[Chunk],
             opts: GenerateOptions, rng: random.Random, rag_prompt: RagPrompt | None = None
             ) -> Example:
    """A closed-book pair, or a RAFT sample: the passage among distractors. Given the
    chat's ``rag_prompt``, a RAFT sample is asked exactly as the chat asks (system
    prompt, numbered sources, question) and its answer cites the passage's number after
    each sentence, as the chat's prompt demands, so the adapter learns to answer from
    the sources and cite them."""
    if not (opts.raft_fraction and rng.random() < opts.raft_fraction):
        return Example(messages=(("user", question), ("assistant", answer)),
                       source=chunk.chunk_id)
    others = [c for c in pool if c.chunk_id != chunk.chunk_id]
    distractors = rng.sample(others, min(opts.distractors, len(others)))
    if rag_prompt is None:
        user = raft_prompt(question, chunk, distractors, rng)
        return Example(messages=(("user", user), ("assistant", answer)), source=chunk.chunk_id)
    docs = [chunk, *distractors]
    rng.shuffle(docs)
    messages = [(m["role"], m["content"]) for m in rag_prompt(question, docs)]
    cited = cite_sentences(answer, docs.index(chunk) + 1)
    return Example(messages=(*messages, ("assistant", cited)), source=chunk.chunk_id)


def cite_sentences(text: str, number: int) -> str:
    """``text`` with the marker ``[number]`` closing each sentence, before its final
    punctuation.

    >>> cite_sentences("Take 500 mg. Drink water!", 2)
    'Take 500 mg [2]. Drink water [2]!'
    """
    out, last = [], 0
    for start, end in sentence_spans(text):
        body = text[start:end]
        stop = len(body.rstrip(".!?。！？"))
        out.append(text[last:start] + body[:stop].rstrip() + f" [{number}]" + body[stop:])
        last = end
    return "".join(out) + text[last:]


def refusal_examples(language: str, k: int) -> list[Example]:
    questions, refusal = OFF_TOPIC.get(language, OFF_TOPIC["en"])
    return [Example(messages=(("user", q), ("assistant", refusal)), source="refusal")
            for q in questions[:k]]


def _main_language(chunks: Sequence[Chunk]) -> str:
    counts = Counter(detect_language(c.text) for c in chunks[:50])
    return counts.most_common(1)[0][0] if counts else "en"


def generate_dataset(llm, chunks: Sequence[Chunk], root: Path, name: str,
                     opts: GenerateOptions = GenerateOptions(), kb: str = "",
                     rag_prompt: RagPrompt | None = None
                     ) -> Generator[GenerationEvent, None, DatasetRecord]:
    """``generate_pairs``, then store the pairs as a dataset (with its held-out split)."""
    examples = yield from generate_pairs(llm, chunks, opts, rag_prompt)
    if not examples:
        raise ValueError("The model wrote no usable question-answer pairs for these passages.")
    yield GenerationEvent("saving", len(examples), len(examples), kept=len(examples))
    record = save_dataset(root, examples, "chat", name, f"generated from knowledge base {kb}",
                          {"kb": kb, "generated": len(examples), "options": opts.__dict__})
    yield GenerationEvent("done", 1, 1, record.id, len(examples))
    return record
