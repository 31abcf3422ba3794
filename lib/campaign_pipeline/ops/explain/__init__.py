"""Explain: a fan's story for support and auditors (`story.py`), read from the warehouse by `readers.py`."""
