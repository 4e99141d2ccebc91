DELETE FROM document_embeddings WHERE source_type = %(p0)s
-- params: p0
