"""Files the pipeline writes beside its tables (legacy zips, reports) to a folder or to S3.

S3 goes through boto3, which honours `AWS_ENDPOINT_URL` (a moto server in tests). A refused
upload is one clear error naming the destination.
"""

from __future__ import annotations

from pathlib import Path

from campaign_pipeline.errors import PipelineError


def hadoop_fs(spark, path: str):
    """(Hadoop Path, its FileSystem) for a local or remote (s3://, s3a://) path, as Spark sees it."""
    hpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark._jsc.hadoopConfiguration())


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` → (`bucket`, `some/prefix`)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def upload(files: list[tuple[Path, str]], bucket: str, what: str) -> None:
    """Upload (local file, key) pairs to `bucket`; HTML is served as HTML."""
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3")
    for local, key in files:
        extra = {"ContentType": "text/html; charset=utf-8"} if Path(local).suffix == ".html" else {}
        try:
            client.upload_file(str(local), bucket, key, ExtraArgs=extra)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise PipelineError(f"{what}: cannot upload s3://{bucket}/{key}: {exc}") from None
