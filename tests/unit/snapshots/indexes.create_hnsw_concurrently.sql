CREATE INDEX CONCURRENTLY "idx_document_embeddings_vector" ON document_embeddings USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)
-- params: none
