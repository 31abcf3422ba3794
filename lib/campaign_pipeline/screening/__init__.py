"""Screening: normalise and validate registrants, resolve identities, detect fraud."""
