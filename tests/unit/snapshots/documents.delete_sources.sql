DELETE FROM document_embeddings WHERE source_type = %(p0)s AND source_id = ANY(%(p1)s::text[])
-- params: p0, p1
