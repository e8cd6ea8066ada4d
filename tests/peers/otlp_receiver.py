#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver for tests/traces.rs: decodes what the daemon exports
with the official protobuf definitions (PyPI `opentelemetry-proto`).

Usage: python otlp_receiver.py

Listens on 127.0.0.1 (a free port) and prints `LISTENING <port>`, then one line per
span received on `POST /v1/traces` (`Content-Type: application/x-protobuf`):

    SPAN {"service": ..., "scope": ..., "name": ..., "trace_id": hex, "span_id": hex,
          "parent_span_id": hex or "", "kind": int, "links": [{"trace_id", "span_id"}],
          "attributes": {key: value}}

A body that does not decode as an ExportTraceServiceRequest is answered 400 and
printed as `BAD <reason>`; anything but POST /v1/traces is 404.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(pairs):
    return {pair.key: value_of(pair.value) for pair in pairs}


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.answer(404, b"not found", "text/plain")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            say(f"BAD content type {self.headers.get('Content-Type')!r}")
            self.answer(400, b"protobuf only", "text/plain")
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            say(f"BAD {error}")
            self.answer(400, b"undecodable", "text/plain")
            return
        for resource_spans in request.resource_spans:
            service = attributes(resource_spans.resource.attributes).get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    say("SPAN " + json.dumps({
                        "service": service,
                        "scope": scope_spans.scope.name,
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex()}
                                  for link in span.links],
                        "attributes": attributes(span.attributes),
                    }))
        response = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.answer(200, response, "application/x-protobuf")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    say(f"LISTENING {server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
