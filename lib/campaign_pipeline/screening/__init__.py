"""Screening: normalise and validate registrants, resolve identities, detect fraud (SPEC §3 stage 2)."""
