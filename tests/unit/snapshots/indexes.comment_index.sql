COMMENT ON INDEX "idx_document_embeddings_vector" IS 'built by sony-rag'
-- params: none
