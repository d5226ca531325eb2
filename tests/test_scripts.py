"""Vietnamese and English answers are kept free of Chinese characters while they are
generated: the model's CJK tokens get a bias of -inf on the real llama-server."""
from __future__ import annotations

import re

import pytest

from assistant.llm import ServedLLM
from assistant.model_server import ModelServer, ServerConfig
from assistant.vocab import cjk_token_ids

EAST_ASIAN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@pytest.fixture(scope="module")
def small_model():
    from assistant.canary import server_binary
    from common.models import DEFAULT_MODELS
    from tests.conftest import shared_models_dir

    gguf = shared_models_dir() / DEFAULT_MODELS["qwen2.5-coder-0.5b"].filename
    binary = server_binary()
    if binary is None or not gguf.is_file():
        pytest.skip("llama-server or the 0.5B GGUF is not built (run make setup models)")
    return binary, gguf


@pytest.mark.slow
def test_the_vocabulary_scan_finds_the_cjk_tokens_and_is_cached(small_model, tmp_path):
    _, gguf = small_model
    ids = cjk_token_ids(gguf, tmp_path)
    assert 20_000 < len(ids) < 60_000  # Qwen2.5's vocabulary has 151,936 tokens
    assert list(tmp_path.glob("cjk-tokens-*.json"))
    assert cjk_token_ids(gguf, tmp_path) == ids  # from the cache now


@pytest.mark.slow
def test_a_request_to_write_chinese_stays_latin_when_latin_only(small_model, tmp_path):
    binary, gguf = small_model
    server = ModelServer(ServerConfig(binary, gguf, n_ctx=1024, parallel=1))
    ids = cjk_token_ids(gguf, tmp_path)
    try:
        server.wait_ready()
        llm = ServedLLM(server, gguf.name, 1024, cjk_tokens=lambda: ids)
        ask = [{"role": "user", "content": "Translate into Chinese characters: "
                                           "good morning, doctor."}]
        free = "".join(llm.stream_chat(ask, 24, 0.0))
        held = "".join(llm.latin_only().stream_chat(ask, 24, 0.0))
    finally:
        server.stop()
    assert EAST_ASIAN.search(free), free  # the model writes Chinese when it may
    assert held.strip() and not EAST_ASIAN.search(held), held


@pytest.mark.slow
def test_under_the_citing_grammar_every_chinese_sentence_names_a_given_source(small_model):
    from assistant.cite_grammar import cited_answer_grammar
    from assistant.citations import marker_numbers
    from assistant.prompts import answer_messages
    from assistant.types import Source

    binary, gguf = small_model
    sources = [Source(1, "c1", "kb", "chickenpox.txt", 0, "Chickenpox is caused by the "
                      "varicella-zoster virus. It causes an itchy, blister-like rash that "
                      "appears first on the chest, back and face.", 0.9),
               Source(2, "c2", "kb", "vaccines.txt", 0, "The chickenpox vaccine is the best "
                      "way to prevent chickenpox. Children get two doses.", 0.8)]
    messages = answer_messages("水痘有哪些症状？怎样预防？", sources, "Answer from the sources.",
                               "zh-Hans")
    server = ModelServer(ServerConfig(binary, gguf, n_ctx=2048, parallel=1))
    try:
        server.wait_ready()
        llm = ServedLLM(server, gguf.name, 2048).constrained(cited_answer_grammar({1, 2}))
        text = "".join(llm.stream_chat(messages, 160, 0.0))
    finally:
        server.stop()
    assert EAST_ASIAN.search(text), text
    assert set(marker_numbers(text)) <= {1, 2} and marker_numbers(text), text
    # each finished sentence carries its own marker, before or after its 。！？
    moved = re.sub(r"([。！？])(\s?(?:\[\d\])+)", r"\2\1", text)
    finished = [s for s in re.split(r"(?<=[。！？])|\n", moved) if s.strip()][:-1]
    for sentence in finished:
        if EAST_ASIAN.search(sentence) and not sentence.rstrip().endswith(("：", ":")):
            assert re.search(r"\[\d\]", sentence), (sentence, text)
