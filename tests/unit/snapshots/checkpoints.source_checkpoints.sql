SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata FROM chat_checkpoints WHERE session_id = %(p0)s::uuid
-- params: p0
