UPDATE chat_messages m SET message_key = a.message_key FROM unnest(%(p0)s::bigint[], %(p1)s::text[]) AS a(seq, message_key) WHERE m.session_id = %(p2)s::uuid AND m.seq = a.seq AND m.message_key IS NULL
-- params: p0, p1, p2
