INSERT INTO chat_checkpoints (session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata) SELECT %(p0)s::uuid, c.ns, c.id, c.parent, c.checkpoint::json, c.metadata FROM unnest(%(p1)s::text[], %(p2)s::text[], %(p3)s::text[], %(p4)s::text[], %(p5)s::jsonb[]) AS c(ns, id, parent, checkpoint, metadata) ON CONFLICT DO NOTHING
-- params: p0, p1, p2, p3, p4, p5
