WITH gone AS (DELETE FROM chat_checkpoints WHERE metadata ->> 'run_id' = ANY(%(p0)s::text[]) RETURNING session_id, checkpoint_ns, checkpoint_id) DELETE FROM chat_checkpoint_writes w USING gone WHERE w.session_id = gone.session_id AND w.checkpoint_ns = gone.checkpoint_ns AND w.checkpoint_id = gone.checkpoint_id
-- params: p0
