DELETE FROM chat_sessions WHERE session_id = %(p0)s::uuid
-- params: p0
