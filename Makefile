# campaign-pipeline — the two commands are `make demo` and `make test`; both set everything up first.
PYTHON        ?= python3
VENV          ?= .venv
BIN           := $(VENV)/bin
# The JVM versions live in one place, lib/campaign_pipeline/versions.py (session.py reads the same
# pins when it asks Spark for the jars by their Maven coordinates): Amazon EMR emr-spark-8.0.0.
VERSIONS      := lib/campaign_pipeline/versions.py
version_of     = $(shell sed -n 's/^$(1) = "\(.*\)"$$/\1/p' $(VERSIONS))
SPARK_VERSION ?= $(call version_of,SPARK)
DELTA_VERSION ?= $(call version_of,DELTA)
SCALA         ?= $(call version_of,SCALA)
HADOOP_VERSION ?= $(call version_of,HADOOP)
LIBPHONENUMBER ?= $(call version_of,LIBPHONENUMBER)
JARS_DIR      ?= jars
# The project's own jars are package data: the wheel carries them (campaign_pipeline.jars.location()).
OWN_JARS_DIR  := lib/campaign_pipeline/jars
UDF_JAR       := $(OWN_JARS_DIR)/campaign-pipeline-udfs.jar
LOCALFS_JAR   := $(OWN_JARS_DIR)/campaign-pipeline-localfs.jar
JARS := $(JARS_DIR)/delta-spark_$(SCALA)-$(DELTA_VERSION).jar \
        $(JARS_DIR)/delta-storage-$(DELTA_VERSION).jar \
        $(JARS_DIR)/spark-avro_$(SCALA)-$(SPARK_VERSION).jar \
        $(JARS_DIR)/libphonenumber-$(LIBPHONENUMBER).jar \
        $(UDF_JAR) $(LOCALFS_JAR)
REGISTRANTS   ?= 200000

export CAMPAIGN_PIPELINE_JARS_DIR := $(abspath $(JARS_DIR))

.PHONY: install demo test test-s3 test-unit lint bench clean browser dist s3-jars docs jvm notebooks

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
$(JARS_DIR)/libphonenumber-$(LIBPHONENUMBER).jar:
	mvn -q -B dependency:copy -Dartifact=com.googlecode.libphonenumber:libphonenumber:$(LIBPHONENUMBER) -DoutputDirectory=$(JARS_DIR)

# Our own JVM code (jvm/, a Maven module): the Spark UDFs (phone parsing with the Java
# libphonenumber) and Hadoop's local file system without a chmod/readlink process per file (local
# mode only; it goes on the driver's class path, see session.py). Both jars land in the package.
JVM_SOURCES := $(shell find jvm/src -name '*.java')
$(UDF_JAR) $(LOCALFS_JAR) &: jvm/pom.xml $(JVM_SOURCES) $(VERSIONS)
	cd jvm && mvn -q -B package -Dspark.version=$(SPARK_VERSION) -Dscala.binary=$(SCALA) \
	  -Dhadoop.version=$(HADOOP_VERSION) -Dlibphonenumber.version=$(LIBPHONENUMBER)
	cp jvm/target/campaign-pipeline-udfs.jar $(UDF_JAR)
	cp jvm/target/campaign-pipeline-localfs.jar $(LOCALFS_JAR)

jvm: $(UDF_JAR) $(LOCALFS_JAR)

# What a cluster runs (docs: Operator's guide, On EMR): the wheel, a packed virtual environment without pyspark,
# conf.tar.gz, jobs/ and MANIFEST.json. For EMR, build on Amazon Linux 2023 with Python 3.11 and
# DIST_PYTHON_PREFIX=/usr so the packed environment's python links to the cluster's.
DIST_DIR      ?= dist
DIST_PYTHON_PREFIX ?=
dist: install
	$(BIN)/python tools/build_dist.py --out $(DIST_DIR) --delta-version $(DELTA_VERSION) \
	  --jar $(UDF_JAR) --jar $(JARS_DIR)/libphonenumber-$(LIBPHONENUMBER).jar $(if $(DIST_PYTHON_PREFIX),--python-prefix $(DIST_PYTHON_PREFIX))

# Two drivers writing one Delta table on S3 (docs: On EMR): S3A (hadoop-aws, for the Hadoop 3.4.1
# that Spark 4.0.2 ships, with the AWS SDK v2 bundle it was built against) and Delta's DynamoDB log
# store. EMR bundles both; here they are only for `make test-s3`. delta-storage-s3-dynamodb is not
# served by every Maven mirror, so it is compiled from Delta's v4.0.1 sources in vendor/.
HADOOP_AWS    ?= $(HADOOP_VERSION)
AWS_V2_BUNDLE ?= 2.24.6
AWS_V1        ?= 1.12.262
S3_JARS_DIR   := $(JARS_DIR)/s3
S3_MAVEN_JARS := $(S3_JARS_DIR)/hadoop-aws-$(HADOOP_AWS).jar $(S3_JARS_DIR)/bundle-$(AWS_V2_BUNDLE).jar \
                 $(S3_JARS_DIR)/aws-java-sdk-core-$(AWS_V1).jar $(S3_JARS_DIR)/aws-java-sdk-dynamodb-$(AWS_V1).jar \
                 $(S3_JARS_DIR)/jmespath-java-$(AWS_V1).jar $(S3_JARS_DIR)/jackson-dataformat-cbor-2.18.6.jar
DDB_LOG_STORE := $(S3_JARS_DIR)/delta-storage-s3-dynamodb-$(DELTA_VERSION).jar

define maven_jar
$(S3_JARS_DIR)/$(2)-$(3).jar:
	mvn -q -B dependency:copy -Dartifact=$(1):$(2):$(3) -DoutputDirectory=$(S3_JARS_DIR)
endef
$(eval $(call maven_jar,org.apache.hadoop,hadoop-aws,$(HADOOP_AWS)))
$(eval $(call maven_jar,software.amazon.awssdk,bundle,$(AWS_V2_BUNDLE)))
$(eval $(call maven_jar,com.amazonaws,aws-java-sdk-core,$(AWS_V1)))
$(eval $(call maven_jar,com.amazonaws,aws-java-sdk-dynamodb,$(AWS_V1)))
$(eval $(call maven_jar,com.amazonaws,jmespath-java,$(AWS_V1)))
$(eval $(call maven_jar,com.fasterxml.jackson.dataformat,jackson-dataformat-cbor,2.18.6))

DDB_SOURCES := $(shell find vendor/delta-storage-s3-dynamodb -name '*.java')
$(DDB_LOG_STORE): $(VENV)/.installed $(JARS) $(S3_MAVEN_JARS) $(DDB_SOURCES)
	rm -rf build/ddb-classes && mkdir -p build/ddb-classes
	javac -nowarn --release 17 -d build/ddb-classes \
	  -cp "$$($(BIN)/python -c 'import pyspark,os;print(os.path.dirname(pyspark.__file__))')/jars/*:$(JARS_DIR)/*:$(S3_JARS_DIR)/*" \
	  $(DDB_SOURCES)
	cp vendor/delta-storage-s3-dynamodb/LICENSE.txt vendor/delta-storage-s3-dynamodb/NOTICE.txt build/ddb-classes/
	jar cf $@ -C build/ddb-classes .

s3-jars: $(S3_MAVEN_JARS) $(DDB_LOG_STORE)

# The S3 tests: a moto server on 127.0.0.1 as S3 (through S3A) and DynamoDB, two drivers committing
# to one table at once. Separate from `make test` for the 560 MB of S3 jars; .ci/run runs both.
test-s3: install s3-jars $(TEST_JVM_ARCHIVE)
	CAMPAIGN_PIPELINE_S3_JARS_DIR=$(abspath $(S3_JARS_DIR)) $(BIN)/python -m pytest -p no:cacheprovider tests/s3

demo: install
	$(BIN)/campaign-pipeline demo --registrants $(REGISTRANTS)

# Two pytest-xdist workers, each with one small SparkSession; a test file stays on one worker so
# its module fixtures (a shared stage run) are built once.
TEST_WORKERS  ?= 2

# The classes the test JVMs load, archived once per machine (tools/jvm_archive.py, tests/helpers.py):
# each of the suite's many short-lived JVMs then spends about a third less CPU starting.
TEST_JVM_ARCHIVE := build/test-jvm.jsa
$(TEST_JVM_ARCHIVE): tools/jvm_archive.py tests/helpers.py $(VENV)/.installed $(JARS)
	$(BIN)/python tools/jvm_archive.py --out $@

test: install dist $(TEST_JVM_ARCHIVE)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 --ignore=tests/s3 tests

# The edit-run loop: pure transforms on tiny frames, no integration runs (under 2 minutes). One
# pytest process keeps about one core busy (the driver waits on the JVM and back), so two workers.
test-unit: install $(TEST_JVM_ARCHIVE)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests/unit

# The documentation site (mkdocs.yml, docs/) into site/; generated sections come from the code
# (tools/docs_gen.py). `make test` builds it with --strict through tests/unit/test_docs.py.
docs: install
	$(BIN)/python tools/docs_gen.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check lib jobs tests benchmarks
	$(BIN)/ruff format --check lib jobs tests benchmarks

bench: install
	$(BIN)/python benchmarks/phones_bench.py
	$(BIN)/python benchmarks/render_bench.py
	$(BIN)/python benchmarks/run.py --write-results
	$(BIN)/python benchmarks/notify_bench.py
	$(BIN)/python benchmarks/explain_bench.py --warehouse $${BENCH_WORK:-/tmp/campaign-pipeline-bench}/warehouse \
	  --campaign $${BENCH_WORK:-/tmp/campaign-pipeline-bench}/landing/bench.yaml

# Jupyter Lab on notebooks/ (the [notebooks] extra: jupyterlab, ipykernel, papermill).
notebooks: install $(VENV)/.notebooks
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

$(VENV)/.notebooks: setup.cfg
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $@

clean:
	rm -rf warehouse spark-warehouse .pytest_cache dist build site jvm/target $(UDF_JAR) $(LOCALFS_JAR)
