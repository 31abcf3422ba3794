"""The JVM versions this package is built and run with, in one place.

The Makefile reads these lines (`make install` fetches the jars, `mvn package` compiles against
them); `session.py` asks Spark for the same coordinates when no `jars/` folder holds them.
They follow Amazon EMR emr-spark-8.0.0: Spark 4.0.2 (Scala 2.13) with Delta 4.0.x.
"""

SPARK = "4.0.2"
SCALA = "2.13"
DELTA = "4.0.1"
HADOOP = "3.4.1"
# Google's libphonenumber for the JVM: the same release as the `phonenumbers` pin in setup.cfg.
LIBPHONENUMBER = "9.0.43"

# What a local session needs beside pyspark: (jar file name prefix, Maven coordinate).
MAVEN_JARS: tuple[tuple[str, str], ...] = (
    (f"delta-spark_{SCALA}-", f"io.delta:delta-spark_{SCALA}:{DELTA}"),
    ("delta-storage-", f"io.delta:delta-storage:{DELTA}"),
    (f"spark-avro_{SCALA}-", f"org.apache.spark:spark-avro_{SCALA}:{SPARK}"),
    ("libphonenumber-", f"com.googlecode.libphonenumber:libphonenumber:{LIBPHONENUMBER}"),
)
