DELETE FROM chat_sessions WHERE session_id = %(p0)s
-- params: p0
