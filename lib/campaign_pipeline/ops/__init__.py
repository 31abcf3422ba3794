"""Operations, by audience: `explain/` (a fan's story, for support and auditors), `deploy/` (EMR
submit and schedules, for whoever runs the cluster), `maintain.py` (archive, compaction, vacuum)
and `alerts.py` (Slack)."""
