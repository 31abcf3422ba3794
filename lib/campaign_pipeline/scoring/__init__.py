"""Scoring: one raw score in [0, 1] per registrant, its band and a seeded in-band lottery score."""
