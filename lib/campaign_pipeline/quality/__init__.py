"""Data quality: great-expectations suites on the pipeline's tables, results in `dq_results`."""
