"""The peer users write today: a Python Lambda handler for DynamoDB Streams built
with Powertools for AWS Lambda (Python) `BatchProcessor` (`EventType.DynamoDBStreams`)
that turns outbox inserts into EventBridge entries and sends them with boto3
`put_events` in chunks of 10, reporting failed records in `batchItemFailures`.

It reads the same outbox item schema as the Rust relay (`crates/outbox-dynamodb`,
default attribute names) and publishes the same `Detail` envelope, so both do the
same work on the same event files. Configuration comes from the same variables:
OUTBOX_EVENT_BUS_NAME, OUTBOX_MAX_CONCURRENCY (PutEvents calls in flight, default 1,
sent from a thread pool) and, for a local endpoint, boto3's own
AWS_ENDPOINT_URL_EVENTBRIDGE.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

BUS = os.environ["OUTBOX_EVENT_BUS_NAME"]
MARKER = os.environ.get("OUTBOX_MARKER_ATTRIBUTE", "outbox")
MAX_ENTRIES = 10  # PutEvents takes at most 10 entries
CONCURRENCY = max(1, int(os.environ.get("OUTBOX_MAX_CONCURRENCY", "1")))

# Created once per process, at import (Lambda's init phase), as the docs recommend;
# boto3 clients are thread-safe.
events = boto3.client("events")
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
pool = ThreadPoolExecutor(max_workers=CONCURRENCY) if CONCURRENCY > 1 else None


def record_handler(record: DynamoDBRecord):
    """One stream record: the PutEvents entry of an outbox insert, or None to skip it."""
    if record.raw_event.get("eventName") != "INSERT":
        return None
    image = record.dynamodb.new_image  # DynamoDB JSON -> Python values (numbers as Decimal)
    if image.get(MARKER) != "v1":
        return None
    envelope = {
        "id": image["event_id"],
        "source": image["source"],
        "event_type": image["event_type"],
        "aggregate_type": image["aggregate_type"],
        "aggregate_id": image["aggregate_id"],
        "sequence": int(image["sequence"]),
        "occurred_at": image["occurred_at"],
        "payload": json.loads(image["payload"]),
    }
    if image.get("trace_parent"):
        envelope["trace_parent"] = image["trace_parent"]
    if image.get("metadata"):
        envelope["metadata"] = image["metadata"]
    return {
        "Source": image["source"],
        "DetailType": image["event_type"],
        "Detail": json.dumps(envelope, separators=(",", ":")),
        "Time": datetime.fromisoformat(image["occurred_at"]),
        "EventBusName": BUS,
    }


def lambda_handler(event, context):
    records = event["Records"]
    with processor(records=records, handler=record_handler):
        processed = processor.process()  # [("success" | "fail", result, record), ...]
    response = processor.response()
    to_send = [(result, raw) for status, result, raw in processed if status == "success" and result]
    chunks = [to_send[start : start + MAX_ENTRIES] for start in range(0, len(to_send), MAX_ENTRIES)]

    def send(chunk):
        return chunk, events.put_events(Entries=[entry for entry, _ in chunk])

    for chunk, answer in (pool.map(send, chunks) if pool else map(send, chunks)):
        if answer.get("FailedEntryCount"):
            for (_, raw), result in zip(chunk, answer["Entries"]):
                if "ErrorCode" in result:
                    response["batchItemFailures"].append(
                        {"itemIdentifier": raw["dynamodb"]["SequenceNumber"]}
                    )
    return response
