SELECT s.session_id, s.created_at, s.updated_at, s.user_agent, s.current_page, s.metadata, (SELECT count(*) FROM chat_messages m WHERE m.session_id = s.session_id) AS message_count FROM chat_sessions s ORDER BY s.updated_at DESC LIMIT %(p0)s
-- params: p0
