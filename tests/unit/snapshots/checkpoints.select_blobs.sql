SELECT b.session_id, b.checkpoint_ns, b.channel, b.version, b.type, b.blob FROM unnest(%(p0)s::uuid[], %(p1)s::text[], %(p2)s::text[], %(p3)s::text[]) AS k(session_id, checkpoint_ns, channel, version) JOIN chat_checkpoint_blobs b USING (session_id, checkpoint_ns, channel, version)
-- params: p0, p1, p2, p3
