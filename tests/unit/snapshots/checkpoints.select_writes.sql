SELECT w.session_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob, w.message_runs FROM unnest(%(p0)s::uuid[], %(p1)s::text[], %(p2)s::text[]) AS k(session_id, checkpoint_ns, checkpoint_id) JOIN chat_checkpoint_writes w USING (session_id, checkpoint_ns, checkpoint_id) ORDER BY w.task_path, w.task_id, w.idx
-- params: p0, p1, p2
