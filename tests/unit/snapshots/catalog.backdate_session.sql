UPDATE chat_sessions SET updated_at = NOW() - interval '1 day' WHERE session_id = %(p0)s
-- params: p0
