SELECT s.session_id, s.created_at, s.updated_at, s.current_page, (SELECT count(*) FROM chat_messages m WHERE m.session_id = s.session_id) AS message_count, (SELECT count(*) FROM user_text_selections t WHERE t.session_id = s.session_id) AS selection_count FROM chat_sessions s WHERE s.updated_at < NOW() - %(p0)s::interval ORDER BY s.updated_at, s.session_id
-- params: p0
