DELETE FROM document_embeddings WHERE embedding_id = ANY(%(p0)s::uuid[])
-- params: p0
