"""Waves: which coded fans are told when, on which channel, with which text."""
