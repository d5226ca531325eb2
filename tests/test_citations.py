from assistant.citations import MarkerFilter, build_citations, clean_markers, marker_numbers
from assistant.types import Source


def src(n, text, page=1, source="a.pdf"):
    return Source(n, f"c{n}", "default", source, page, text, 1.0)


SOURCES = [
    src(1, "Opening hours are 8 to 6. The clinic has 4 doctors.", page=1),
    src(2, "Adults take amoxicillin 500 mg every 8 hours. The course lasts 7 days.", page=2),
]


def test_invalid_markers_are_removed():
    assert clean_markers("Yes [3]. Dose [2][2]. Both [1, 5].", {1, 2}) == "Yes. Dose [2]. Both [1]."


def test_marker_numbers_in_order_of_first_use():
    assert marker_numbers("x [2] y [1, 2] z [2]") == [2, 1]


def test_citations_map_to_file_page_and_supporting_quote():
    answer = "Adults take 500 mg every 8 hours [2]. It is open 8 to 6 [1]. Nothing [9]."
    cites = build_citations(clean_markers(answer, {1, 2}), SOURCES)
    assert [(c.number, c.source, c.page) for c in cites] == [(2, "a.pdf", 2), (1, "a.pdf", 1)]
    assert cites[0].quote == "Adults take amoxicillin 500 mg every 8 hours."
    assert cites[1].quote == "Opening hours are 8 to 6."
    assert not cites[0].inferred


def test_without_markers_citations_are_inferred_by_overlap():
    cites = build_citations("Adults take amoxicillin 500 mg every 8 hours.", SOURCES)
    assert [(c.number, c.inferred) for c in cites] == [(2, True)]
    assert build_citations("Completely unrelated words here.", SOURCES) == []


def test_streaming_filter_holds_back_only_possible_markers():
    f = MarkerFilter(valid={1, 2})
    pieces = ["Take 500", " mg [", "2", "] daily [7", "]. Done [1", ", 3]"]
    out = [f.feed(p) for p in pieces] + [f.flush()]
    assert "".join(out) == "Take 500 mg [2] daily. Done [1]"
    assert out[0] == "Take 500"  # plain text is not delayed


def test_streaming_filter_passes_brackets_that_are_not_markers():
    f = MarkerFilter(valid={1})
    assert f.feed("see [note] and [") + f.feed("x]") + f.flush() == "see [note] and [x]"


def test_marker_after_the_full_stop_belongs_to_the_sentence_before():
    cites = build_citations("Adults take 500 mg every 8 hours. [2]", SOURCES)
    assert cites[0].quote == "Adults take amoxicillin 500 mg every 8 hours."
