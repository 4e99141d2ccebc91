SELECT r.run, m.seq, m.message_id, m.message_key, m.role, m.content, m.metadata FROM unnest(%(p0)s::uuid[], %(p1)s::bigint[], %(p2)s::bigint[]) WITH ORDINALITY AS r(session_id, first_seq, last_seq, run) JOIN chat_messages m ON m.session_id = r.session_id AND m.seq BETWEEN r.first_seq AND r.last_seq ORDER BY r.run, m.seq
-- params: p0, p1, p2
