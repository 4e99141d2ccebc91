INSERT INTO chat_checkpoint_blobs (session_id, checkpoint_ns, channel, version, type, blob) SELECT %(p1)s::uuid, checkpoint_ns, channel, version, type, blob FROM chat_checkpoint_blobs WHERE session_id = %(p0)s::uuid ON CONFLICT DO NOTHING
-- params: p0, p1, p2, p3

INSERT INTO chat_checkpoint_writes (session_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, blob, message_runs, task_path) SELECT %(p1)s::uuid, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx, w.channel, w.type, w.blob, CASE WHEN w.message_runs IS NOT NULL THEN coalesce((SELECT array_agg(m.new_seq ORDER BY r.position) FROM unnest(w.message_runs) WITH ORDINALITY AS r(seq, position) JOIN unnest(%(p2)s::bigint[], %(p3)s::bigint[]) AS m(old_seq, new_seq) ON m.old_seq = r.seq), '{}') END, w.task_path FROM chat_checkpoint_writes w WHERE w.session_id = %(p0)s::uuid ON CONFLICT DO NOTHING
-- params: p0, p1, p2, p3
