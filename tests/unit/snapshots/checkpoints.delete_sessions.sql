DELETE FROM chat_sessions WHERE session_id = ANY(%(p0)s::uuid[])
-- params: p0
