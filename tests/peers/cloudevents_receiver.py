#!/usr/bin/env python3
"""A CloudEvents 1.0 HTTP receiver that parses what arrives with the official PyPI
`cloudevents` SDK (tests/sink_examples.rs, the `cloudevents` example sink).

Usage: python cloudevents_receiver.py [--port 0]   (see sink_receiver.py: output, control API)

* Structured content mode (`Content-Type: application/cloudevents+json`): the request is
  parsed with `cloudevents.core.bindings.http.from_http` (JSON format, the v1.0 event class).
* Batched content mode (`Content-Type: application/cloudevents-batch+json`): the body must
  be a JSON array; the SDK (2.2.0) has no batch reader, so each element is parsed as a
  structured message with `from_structured`, as the spec's batch format is an array of
  JSON-format events.

The SDK validates the required attributes (id, source, type non-empty strings), the
optional ones' types (subject, datacontenttype non-empty), extension names, and parses
`time`. As it fills in a missing `specversion` (1.0) and `time` (now) and accepts any ISO
8601 `time`, the raw JSON is checked too: `specversion` exactly "1.0", `time` present and
RFC 3339 (rfc3339-validator), `datacontenttype` present. Anything else is answered 400.
Binary mode (ce-* headers) is refused: the example never sends it.

Summary: {"mode": "structured" | "batch", "events": [{id, source, type, subject, time,
datacontenttype, data}, ...]} (`time` as the text sent).
"""

import json
import os
import sys

from cloudevents.core.bindings.http import HTTPMessage, from_http, from_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from rfc3339_validator import validate_rfc3339

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sink_receiver import Invalid, serve  # noqa: E402

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def checked(raw, event):
    """The raw JSON checks the SDK leaves out, then the event's summary."""
    if not isinstance(raw, dict):
        raise Invalid(f"a CloudEvent is a JSON object, not {raw!r}")
    if raw.get("specversion") != "1.0":
        raise Invalid(f"specversion is {raw.get('specversion')!r}, not \"1.0\"")
    if not isinstance(raw.get("time"), str) or not validate_rfc3339(raw["time"]):
        raise Invalid(f"time {raw.get('time')!r} is not RFC 3339")
    if "datacontenttype" not in raw:
        raise Invalid("no datacontenttype")
    if not isinstance(event, CloudEvent):
        raise Invalid(f"parsed as {type(event).__name__}, not a CloudEvents 1.0 event")
    return {
        "id": event.get_id(),
        "source": event.get_source(),
        "type": event.get_type(),
        "subject": event.get_subject(),
        "time": raw["time"],
        "datacontenttype": event.get_datacontenttype(),
        "data": event.get_data(),
    }


def validate(path, headers, body):
    if any(name.startswith("ce-") for name in headers):
        raise Invalid("binary content mode (ce-* headers): the example sends structured events")
    content_type = headers.get("content-type", "").split(";")[0].strip()
    if content_type == STRUCTURED:
        event = from_http(HTTPMessage(headers=headers, body=body), JSONFormat(), CloudEvent)
        return {"mode": "structured", "events": [checked(json.loads(body), event)]}
    if content_type == BATCH:
        array = json.loads(body)
        if not isinstance(array, list):
            raise Invalid("a batch is a JSON array of CloudEvents")
        events = []
        for raw in array:
            message = HTTPMessage(headers={"content-type": STRUCTURED}, body=json.dumps(raw).encode())
            events.append(checked(raw, from_structured(message, JSONFormat(), CloudEvent)))
        return {"mode": "batch", "events": events}
    raise Invalid(f"content-type {content_type!r} is neither {STRUCTURED} nor {BATCH}")


if __name__ == "__main__":
    serve(validate, "CloudEvents 1.0 receiver validating with the cloudevents SDK")
