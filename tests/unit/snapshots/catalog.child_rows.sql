SELECT (SELECT count(*) FROM chat_messages WHERE session_id = %(p0)s) + (SELECT count(*) FROM user_text_selections WHERE session_id = %(p0)s) AS n
-- params: p0
