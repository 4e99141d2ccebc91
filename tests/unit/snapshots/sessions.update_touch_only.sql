UPDATE chat_sessions SET updated_at = NOW() WHERE session_id = %(p0)s RETURNING session_id, created_at, updated_at, user_agent, current_page, metadata
-- params: p0
