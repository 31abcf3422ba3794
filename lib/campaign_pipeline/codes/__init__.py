"""Access codes: pool, generated (keyed HMAC) or TM placeholders, assigned by a partitioned join."""
