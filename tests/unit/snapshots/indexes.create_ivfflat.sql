CREATE INDEX "idx_document_embeddings_vector" ON document_embeddings USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)
-- params: none
