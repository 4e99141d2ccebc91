INSERT INTO user_text_selections (session_id, selected_text, page_url, embedding, metadata, created_at) VALUES (%(p0)s, %(p1)s, %(p2)s, %(p3)s, %(p4)s, clock_timestamp()) RETURNING selection_id
-- params: p0, p1, p2, p3, p4
