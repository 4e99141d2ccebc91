SELECT selection_id, session_id, selected_text, page_url, created_at, embedding, metadata FROM user_text_selections WHERE session_id = %(p0)s ORDER BY created_at DESC, selection_id DESC LIMIT %(p1)s
-- params: p0, p1
