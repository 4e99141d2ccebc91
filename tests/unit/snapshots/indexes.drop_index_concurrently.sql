DROP INDEX CONCURRENTLY IF EXISTS "idx_document_embeddings_vector"
-- params: none
