"""The campaign report: reconciliation, campaign_stats snapshots, one HTML file and Data Docs."""
