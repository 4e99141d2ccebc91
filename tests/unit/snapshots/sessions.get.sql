SELECT session_id, created_at, updated_at, user_agent, current_page, metadata FROM chat_sessions WHERE session_id = %(p0)s
-- params: p0
