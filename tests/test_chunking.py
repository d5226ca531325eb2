from common.text import count_tokens, sentence_spans
from ingest.chunking import ChunkingParams, chunk_pages, chunk_spans
from ingest.types import Page

import pytest


def test_count_tokens_counts_words_han_and_punctuation():
    assert count_tokens("Take 500 mg.") == 4  # Take, 500, mg, .
    assert count_tokens("发烧了。") == 4


def test_sentences_never_cross_paragraphs():
    text = "Line one has no stop\n\nSecond para. Ends here."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Line one has no stop", "Second para.", "Ends here."]


def test_worked_example_packing_and_overlap():
    # five sentences of 4 tokens each ("wN wN wN ." ), size 9 -> 2 sentences per chunk,
    # overlap 4 -> each chunk repeats the last sentence of the previous one
    text = " ".join(f"w{i} w{i} w{i}." for i in range(5))
    spans = chunk_spans(text, ChunkingParams(chunk_size=9, chunk_overlap=4))
    assert [text[a:b] for a, b in spans] == [
        "w0 w0 w0. w1 w1 w1.",
        "w1 w1 w1. w2 w2 w2.",
        "w2 w2 w2. w3 w3 w3.",
        "w3 w3 w3. w4 w4 w4.",
    ]


def test_no_overlap_means_disjoint_chunks():
    text = " ".join(f"w{i} w{i} w{i}." for i in range(5))
    spans = chunk_spans(text, ChunkingParams(chunk_size=9, chunk_overlap=0))
    assert [text[a:b] for a, b in spans] == [
        "w0 w0 w0. w1 w1 w1.", "w2 w2 w2. w3 w3 w3.", "w4 w4 w4."]


def test_overlong_sentence_is_cut_at_token_boundaries():
    text = " ".join(["word"] * 25)
    spans = chunk_spans(text, ChunkingParams(chunk_size=10, chunk_overlap=0))
    assert [count_tokens(text[a:b]) for a, b in spans] == [10, 10, 5]


def test_chinese_sentences_split_on_full_stops():
    text = "患者发烧三天。体温39度！需要复诊吗？"
    assert [text[a:b] for a, b in sentence_spans(text)] == ["患者发烧三天。", "体温39度！", "需要复诊吗？"]


def test_chunks_carry_page_span_and_exact_text():
    pages = [Page(1, "Alpha beta. Gamma delta."), Page(2, "Second page text.")]
    chunks = chunk_pages("doc", "a.pdf", pages, ChunkingParams(chunk_size=50, chunk_overlap=0))
    assert [(c.page, c.text, c.ordinal) for c in chunks] == [
        (1, "Alpha beta. Gamma delta.", 0), (2, "Second page text.", 1)]
    for c, p in zip(chunks, pages):
        assert p.text[c.start:c.end] == c.text
    assert chunks[1].chunk_id == "doc-00001"


def test_invalid_params_are_refused():
    with pytest.raises(ValueError):
        ChunkingParams(chunk_size=100, chunk_overlap=100)


def test_table_rows_are_never_split_and_stay_whole():
    rows = "\n".join(f"| drug {i} | {i}00 mg | twice daily with food and water |" for i in range(6))
    text = "Dosing table.\n\n" + rows
    spans = chunk_spans(text, ChunkingParams(chunk_size=20, chunk_overlap=0))
    pieces = [text[a:b] for a, b in spans]
    for piece in pieces:
        for line in piece.splitlines():
            assert not line.startswith("|") or line.endswith("|")
    assert sum(p.count("| drug") for p in pieces) == 6


def test_long_table_row_is_kept_whole_even_if_over_size():
    row = "| " + " | ".join(["cell"] * 30) + " |"
    (span,) = chunk_spans(row, ChunkingParams(chunk_size=10, chunk_overlap=0))
    assert row[span[0]:span[1]] == row


def test_chunks_never_cross_headings_and_carry_the_heading_path():
    text = "Intro text here.\n\nDosing\n\nTake 500 mg.\n\nSide effects\n\nNausea is common."
    sections = ((0, "Guide"), (18, "Guide > Dosing"), (40, "Guide > Side effects"))
    page = Page(0, text, sections)
    chunks = chunk_pages("d", "g.md", [page], ChunkingParams(chunk_size=200, chunk_overlap=0))
    assert [(c.heading, c.text) for c in chunks] == [
        ("Guide", "Intro text here."),
        ("Guide > Dosing", "Dosing\n\nTake 500 mg."),
        ("Guide > Side effects", "Side effects\n\nNausea is common."),
    ]


def test_sizes_follow_the_given_token_counter():
    text = " ".join(f"s{i}." for i in range(10))
    visible = lambda t: len(t.replace(" ", ""))  # noqa: E731
    spans = chunk_spans(text, ChunkingParams(chunk_size=12, chunk_overlap=0), count=visible)
    assert [visible(text[a:b]) for a, b in spans] == [12, 12, 6]
