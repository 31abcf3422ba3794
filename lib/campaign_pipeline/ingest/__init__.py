"""Ingest: landing files → Delta tables, with quarantine and reconciliation."""
