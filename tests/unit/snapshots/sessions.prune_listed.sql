DELETE FROM chat_sessions WHERE session_id = ANY(%(p0)s::uuid[]) AND updated_at < NOW() - %(p1)s::interval
-- params: p0, p1
