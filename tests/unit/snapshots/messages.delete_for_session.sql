DELETE FROM chat_messages WHERE session_id = %(p0)s
-- params: p0
