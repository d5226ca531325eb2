"""From files to chunks: loaders, chunking, and the ingestion pipeline."""
