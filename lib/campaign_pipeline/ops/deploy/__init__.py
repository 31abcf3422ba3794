"""Deploy: submitting jobs to EMR with what `make dist` built (`submit.py`), and the schedules (`schedules.py`)."""
