UPDATE chat_sessions SET user_agent = 'touched' WHERE session_id = %(p0)s
-- params: p0
