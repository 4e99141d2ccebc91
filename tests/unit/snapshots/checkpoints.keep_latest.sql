DELETE FROM chat_checkpoints c WHERE c.session_id = ANY(%(p0)s::uuid[]) AND c.checkpoint_id < (SELECT max(n.checkpoint_id) FROM chat_checkpoints n WHERE n.session_id = c.session_id AND n.checkpoint_ns = c.checkpoint_ns)
-- params: p0

DELETE FROM chat_checkpoint_writes w WHERE w.session_id = ANY(%(p0)s::uuid[]) AND NOT EXISTS (SELECT 1 FROM chat_checkpoints c WHERE c.session_id = w.session_id AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id)
-- params: p0

DELETE FROM chat_checkpoint_blobs b WHERE b.session_id = ANY(%(p0)s::uuid[]) AND NOT EXISTS (SELECT 1 FROM chat_checkpoints c WHERE c.session_id = b.session_id AND c.checkpoint_ns = b.checkpoint_ns AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)
-- params: p0
