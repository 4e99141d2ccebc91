COPY "sony_rag_staging" ("embedding_id", "source_type", "source_id", "content_chunk", "embedding", "metadata", "document_id") FROM STDIN WITH (FORMAT BINARY)
-- params: none
