SELECT m.seq, m.version, k.role, k.content, k.metadata FROM (SELECT seq, xmin::text::bigint AS version, role, content, metadata FROM chat_messages WHERE session_id = %(p1)s::uuid) AS m LEFT JOIN LATERAL (SELECT m.role::text AS role, m.content, m.metadata::text AS metadata WHERE %(p0)s::jsonb ->> m.seq::text IS DISTINCT FROM m.version::text) AS k ON true ORDER BY m.seq
-- params: p0, p1
