#!/usr/bin/env python3
"""A Datadog Events API v1 stand-in (`POST /api/v1/events`) for tests/sink_examples.rs,
the `datadog` example sink.

Usage: python datadog_receiver.py --api-key KEY [--port 0]
    (see sink_receiver.py: output, control API)

A request whose `DD-API-KEY` header is not KEY is answered 403 `{"errors":["Forbidden"]}`,
as Datadog answers. Otherwise the body must be an Events API v1 event: `title` (1 to 100
characters) and `text` (at most 4000) strings, `date_happened` an integer (Unix seconds),
`tags` a list of strings, `alert_type` one of error, warning, info, success;
`aggregation_key` (at most 100) and `source_type_name` strings when present. A valid event
is answered 202 `{"status":"ok"}` (unless scripted); anything else 400.

Summary: the event as sent.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sink_receiver  # noqa: E402
from sink_receiver import Invalid  # noqa: E402

ALERT_TYPES = {"error", "warning", "info", "success"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-key", required=True)
    args, _ = parser.parse_known_args()

    def validate(path, headers, body):
        if path != "/api/v1/events":
            raise Invalid(f"{path}: the Events API v1 is POST /api/v1/events")
        if headers.get("dd-api-key") != args.api_key:
            raise Invalid("DD-API-KEY missing or wrong", status=403, body='{"errors":["Forbidden"]}')
        if not headers.get("content-type", "").startswith("application/json"):
            raise Invalid("content-type is not application/json")
        event = json.loads(body)
        if not isinstance(event, dict):
            raise Invalid("the body is not a JSON object")
        for key, most in (("title", 100), ("text", 4000)):
            if not isinstance(event.get(key), str) or len(event[key]) > most:
                raise Invalid(f"`{key}` must be a string of at most {most} characters")
        if not event["title"]:
            raise Invalid("`title` is empty")
        if not isinstance(event.get("date_happened"), int):
            raise Invalid("`date_happened` must be an integer (Unix seconds)")
        tags = event.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Invalid("`tags` must be a list of strings")
        if event.get("alert_type") not in ALERT_TYPES:
            raise Invalid(f"`alert_type` must be one of {sorted(ALERT_TYPES)}")
        for key, most in (("aggregation_key", 100), ("source_type_name", 100)):
            if key in event and (not isinstance(event[key], str) or len(event[key]) > most):
                raise Invalid(f"`{key}` must be a string of at most {most} characters")
        return event

    sink_receiver.serve(validate, "Datadog Events API v1 stand-in")


if __name__ == "__main__":
    main()
