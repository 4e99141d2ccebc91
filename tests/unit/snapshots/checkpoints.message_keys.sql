SELECT seq, message_key, CASE WHEN message_key IS NULL THEN coalesce(metadata -> 'data' ->> 'id', message_id::text) END AS adoptable FROM chat_messages WHERE session_id = %(p0)s ORDER BY seq
-- params: p0
