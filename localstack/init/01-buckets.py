#!/usr/bin/env python3
"""Create every bucket listed in localstack/buckets.txt (idempotent).

Run with a python that has boto3 (start.sh / s3.sh use the stack venv):
    SIGNET_S3_ENDPOINT=http://127.0.0.1:5000 venv/bin/python localstack/init/01-buckets.py
Env: SIGNET_S3_ENDPOINT (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL), SIGNET_BUCKETS_FILE,
     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default test/test), AWS_REGION (us-east-1).
"""
import os
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError


def log(msg):
    print("[signet-stack] %s" % msg, file=sys.stderr)


def bucket_names(path):
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def main():
    endpoint = (os.environ.get("SIGNET_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:5000")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    buckets_file = os.environ.get("SIGNET_BUCKETS_FILE") or str(
        Path(__file__).resolve().parent.parent / "buckets.txt")
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )
    for attempt in range(30):  # the server may still be starting
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except EndpointConnectionError:
            if attempt == 29:
                raise
            time.sleep(0.5)
    for name in bucket_names(buckets_file):
        if name in existing:
            log("bucket %s exists" % name)
            continue
        kwargs = {"Bucket": name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
            log("bucket %s created at %s" % (name, endpoint))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            log("bucket %s exists" % name)


if __name__ == "__main__":
    main()
