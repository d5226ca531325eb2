"""Which tokens of a GGUF model write East Asian scripts, so that an answer that must be
Vietnamese or English can be kept free of them while it is generated (llama-server's
``logit_bias``), instead of deleting characters afterwards.

The vocabulary is read from the GGUF file with the ``gguf`` package (pure Python: no
native code runs on the model file), once per model, and kept in a small cache file.
A byte-level BPE token (GPT-2's byte-to-character mapping, as Qwen uses) is banned when
its bytes hold a UTF-8 lead byte of the CJK, kana or Hangul blocks (0xE3-0xED): that
covers whole characters and the byte pieces that could spell one.

>>> _token_bytes("Ġhello")
b' hello'
>>> _writes_cjk(_token_bytes("åĳ¨æľŁ"))  # 周期
True
>>> _writes_cjk("Việt".encode()), _writes_cjk("，".encode())  # Vietnamese, a full-width comma
(False, False)
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = 1
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable character table, character -> byte."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _token_bytes(token: str) -> bytes | None:
    table = _byte_decoder()
    try:
        return bytes(table[ch] for ch in token)
    except KeyError:  # not a byte-level token (e.g. a SentencePiece vocabulary)
        return None


def _writes_cjk(raw: bytes) -> bool:
    return any(0xE3 <= b <= 0xED for b in raw)


def cjk_token_ids(gguf: Path, cache_dir: Path) -> tuple[int, ...]:
    """Ids of the tokens of ``gguf`` that write CJK, kana or Hangul (empty when its
    vocabulary is not byte-level BPE). Cached in ``cache_dir`` by the file's name, size
    and modification time."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    cache = cache_dir / f"cjk-tokens-{key.hexdigest()[:16]}.json"
    with _LOCK:
        if cache.is_file():
            data = json.loads(cache.read_text(encoding="utf-8"))
            if data.get("format") == FORMAT:
                return tuple(data["ids"])
        ids = _scan(gguf)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "model": gguf.name, "ids": ids}),
                       encoding="utf-8")
        tmp.replace(cache)
    return tuple(ids)


def _scan(gguf: Path) -> list[int]:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.tokens")
    if field is None:
        return []
    ids = []
    for token_id, part in enumerate(field.data):
        raw = _token_bytes(bytes(field.parts[part]).decode("utf-8", errors="replace"))
        if raw is None:
            log.info("%s: not a byte-level vocabulary; scripts are not held at decoding",
                     gguf.name)
            return []
        if _writes_cjk(raw):
            ids.append(token_id)
    return ids
