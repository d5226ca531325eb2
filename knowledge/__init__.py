"""The index: chunks stored in Chroma (vectors) and a BM25 index, fused at query time."""
