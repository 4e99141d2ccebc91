ANALYZE document_embeddings
-- params: none
