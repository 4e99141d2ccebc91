DELETE FROM document_embeddings WHERE source_type = %(p0)s AND source_id = %(p1)s
-- params: p0, p1
