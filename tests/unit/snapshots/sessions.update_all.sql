UPDATE chat_sessions SET updated_at = NOW(), user_agent = %(p0)s, current_page = %(p1)s, metadata = metadata || %(p2)s WHERE session_id = %(p3)s RETURNING session_id, created_at, updated_at, user_agent, current_page, metadata
-- params: p0, p1, p2, p3
