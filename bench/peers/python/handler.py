"""The peer users write today: a Python Lambda handler for DynamoDB Streams built
with Powertools for AWS Lambda (Python) `BatchProcessor` (`EventType.DynamoDBStreams`)
that turns outbox inserts into EventBridge entries and sends them with boto3
`put_events` in chunks of 10, reporting failed records in `batchItemFailures`.

It reads the same outbox item schema as the Rust relay (`crates/outbox-dynamodb`,
default attribute names) and publishes the same `Detail` envelope, so both do the
same work on the same event files. Configuration comes from the same variables:
OUTBOX_EVENT_BUS_NAME and, for a local endpoint, OUTBOX_EVENTBRIDGE_ENDPOINT.
"""

import json
import os
from datetime import datetime

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

BUS = os.environ["OUTBOX_EVENT_BUS_NAME"]
MARKER = os.environ.get("OUTBOX_MARKER_ATTRIBUTE", "outbox")
MAX_ENTRIES = 10  # PutEvents takes at most 10 entries

# Created once per process, at import (Lambda's init phase), as the docs recommend.
events = boto3.client("events", endpoint_url=os.environ.get("OUTBOX_EVENTBRIDGE_ENDPOINT") or None)
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


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
    for start in range(0, len(to_send), MAX_ENTRIES):
        chunk = to_send[start : start + MAX_ENTRIES]
        answer = events.put_events(Entries=[entry for entry, _ in chunk])
        if answer.get("FailedEntryCount"):
            for (_, raw), result in zip(chunk, answer["Entries"]):
                if "ErrorCode" in result:
                    response["batchItemFailures"].append(
                        {"itemIdentifier": raw["dynamodb"]["SequenceNumber"]}
                    )
    return response
