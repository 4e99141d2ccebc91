SELECT "embedding_id", "source_type", "source_id", "content_chunk", "metadata", "created_at", "updated_at", "document_id" FROM document_embeddings WHERE embedding_id = ANY(%(p0)s::uuid[])
-- params: p0
