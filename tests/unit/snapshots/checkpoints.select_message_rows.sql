SELECT seq, message_id, message_key, role, content, metadata FROM chat_messages WHERE session_id = %(p0)s::uuid AND seq = ANY(%(p1)s::bigint[])
-- params: p0, p1
