SELECT updated_at >= NOW() - interval '1 minute' AS fresh FROM chat_sessions WHERE session_id = %(p0)s
-- params: p0
