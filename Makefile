# campaign-pipeline — the two commands are `make demo` and `make test`; both set everything up first.
PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
# Match Amazon EMR emr-spark-8.0.0: Spark 4.0.2 (Scala 2.13) with Delta 4.0.x.
SPARK_VERSION ?= 4.0.2
DELTA_VERSION ?= 4.0.1
SCALA         ?= 2.13
JARS_DIR      ?= jars
JARS := $(JARS_DIR)/delta-spark_$(SCALA)-$(DELTA_VERSION).jar \
        $(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar \
        $(JARS_DIR)/spark-avro_$(SCALA)-$(SPARK_VERSION).jar
REGISTRANTS   ?= 200000

export CAMPAIGN_PIPELINE_JARS_DIR := $(abspath $(JARS_DIR))

.PHONY: install demo test test-unit lint bench clean browser dist

install: $(VENV)/.installed $(JARS) browser

# Debian's Chromium, for the test that opens the campaign report in a headless browser. Where apt
# cannot install it (no root, not Debian), that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || ( command -v apt-get >/dev/null 2>&1 && \
	  ( apt-get install -y -q chromium >/dev/null 2>&1 || \
	    ( apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 ) ) ) || \
	  echo "chromium: not installed (needs apt-get as root); the report's browser test will be skipped"

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Delta and spark-avro come from Maven Central; Maven resolves them where Ivy may not.
$(JARS_DIR)/delta-spark_$(SCALA)-$(DELTA_VERSION).jar:
	mvn -q -B dependency:copy -Dartifact=io.delta:delta-spark_$(SCALA):$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)
$(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar:
	mvn -q -B dependency:copy -Dartifact=io.delta:delta-storage:$(DELTA_VERSION) -DoutputDirectory=$(JARS_DIR)
$(JARS_DIR)/spark-avro_$(SCALA)-$(SPARK_VERSION).jar:
	mvn -q -B dependency:copy -Dartifact=org.apache.spark:spark-avro_$(SCALA):$(SPARK_VERSION) -DoutputDirectory=$(JARS_DIR)

# What a cluster runs (README: On EMR): the wheel, a packed virtual environment without pyspark,
# conf.tar.gz, jobs/ and MANIFEST.json. For EMR, build on Amazon Linux 2023 with Python 3.11 and
# DIST_PYTHON_PREFIX=/usr so the packed environment's python links to the cluster's.
DIST_DIR      ?= dist
DIST_PYTHON_PREFIX ?=
dist: install
	$(BIN)/python tools/build_dist.py --out $(DIST_DIR) --delta-version $(DELTA_VERSION) $(if $(DIST_PYTHON_PREFIX),--python-prefix $(DIST_PYTHON_PREFIX))

demo: install
	$(BIN)/campaign-pipeline demo --registrants $(REGISTRANTS)

# Two pytest-xdist workers, each with one small SparkSession; a test file stays on one worker so
# its module fixtures (a shared stage run) are built once.
TEST_WORKERS  ?= 2

test: install dist
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

# The edit-run loop: pure transforms on tiny frames, no integration runs (under 2 minutes).
test-unit: install
	$(BIN)/python -m pytest tests/unit

lint: install
	$(BIN)/ruff check lib jobs tests benchmarks
	$(BIN)/ruff format --check lib jobs tests benchmarks

bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/notify_bench.py

clean:
	rm -rf warehouse spark-warehouse .pytest_cache dist build
