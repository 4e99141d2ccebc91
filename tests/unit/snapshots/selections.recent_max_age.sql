SELECT selection_id, session_id, selected_text, page_url, created_at, embedding, metadata FROM user_text_selections WHERE session_id = %(p1)s AND created_at >= NOW() - %(p0)s::interval ORDER BY created_at DESC, selection_id DESC LIMIT %(p2)s
-- params: p0, p1, p2
