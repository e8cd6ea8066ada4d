#!/usr/bin/env python3
"""Local SQS SendMessage server (JSON protocol) that VERIFIES the SigV4 signature of every request.

Usage:
    python sqs_server.py [--port 0] [--credentials AKID:SECRET[:TOKEN]]... [--region R] [--verbose]

Binds 127.0.0.1 (port 0 = any free port), prints exactly one line
"listening on 127.0.0.1:PORT" to stdout, then serves HTTP/1.1 until SIGTERM/SIGINT.

SQS API served: the JSON protocol the AWS SDKs speak since 2023 (awsJson1_0,
Content-Type application/x-amz-json-1.0, X-Amz-Target: AmazonSQS.<Operation>), signed
with SigV4 for service "sqs". Only SendMessage is answered with success
({"MD5OfMessageBody", "MessageId"[, "SequenceNumber"]}); other operations answer
UnsupportedOperation.

Signature check: lambda_server.py's (botocore's SigV4Auth recomputing the signature over
the request as received), with the credential scope's service "sqs".

Test control (plain HTTP, unsigned, same port):
    POST /_test/script    {"responses": [{"kind": ...}, ...]}  appends to the answer queue
    GET  /_test/requests  JSON array of every request: {target, input (parsed JSON body or
                          null), signature_valid, access_key, region, status, kind, error}
    POST /_test/reset     clears the log and the queue

Scripted kinds (one per SendMessage, in order; the default answer is "ok"):
    ok               success
    throttle         400 RequestThrottled (x-amzn-query-error: RequestThrottled;Sender), as
                     SQS answers when a queue's send rate is exceeded
    throttling       400 ThrottlingException (no query error header): the generic AWS form
    kms_throttled    400 KMS.ThrottlingException
    not_found        400 QueueDoesNotExist (x-amzn-query-error:
                     AWS.SimpleQueueService.NonExistentQueue;Sender)
    access_denied    403 AccessDenied (x-amzn-query-error: AccessDenied;Sender)
    service_error    500 InternalError (x-amzn-query-error: InternalError;Receiver)
Every answer is recorded; a refused signature answers 403 and is recorded with its reason.
"""

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lambda_server  # noqa: E402  (its SigV4 verification, reused)

lambda_server.SERVICE = "sqs"

# kind -> (status, __type shape, x-amzn-query-error or None, message)
ERRORS = {
    "throttle": (400, "RequestThrottled", "RequestThrottled;Sender", "Request is throttled."),
    "throttling": (400, "ThrottlingException", None, "Rate exceeded"),
    "kms_throttled": (400, "KmsThrottled", "KMS.ThrottlingException;Sender", "KMS throttled"),
    "not_found": (400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue;Sender",
                  "The specified queue does not exist."),
    "access_denied": (403, "AccessDenied", "AccessDenied;Sender", "Access to the resource is denied."),
    "service_error": (500, "InternalError", "InternalError;Receiver", "We encountered an internal error."),
}
KINDS = ("ok",) + tuple(ERRORS)

LOCK = threading.Lock()
SCRIPT = []
REQUESTS = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("sqs_server: %s\n" % (fmt % args))

    def _send(self, status, obj, headers=()):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _error(self, status, shape, query_error, message):
        headers = [("x-amzn-query-error", query_error)] if query_error else []
        self._send(status, {"__type": "com.amazonaws.sqs#" + shape, "message": message}, headers)

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        path, _, query = self.path.partition("?")
        if path.startswith("/_test/"):
            return self._control(path, body)
        target = self.headers.get("X-Amz-Target")
        try:
            parsed = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            parsed = None
        rec = {"target": target, "input": parsed, "signature_valid": False, "access_key": None,
               "region": None, "status": None, "kind": None, "error": None}
        with LOCK:
            REQUESTS.append(rec)
        try:
            akid, region = lambda_server.verify_sigv4(self.command, path, query, self.headers.items(), body)
        except lambda_server.Refused as r:
            with LOCK:
                rec.update(status=r.status, kind="refused", error=r.reason, signature_valid=r.signature_valid,
                           access_key=getattr(r, "akid", None), region=getattr(r, "region", None))
            return self._error(r.status, r.error_type, None, r.message)
        with LOCK:
            rec.update(signature_valid=True, access_key=akid, region=region)
        if target != "AmazonSQS.SendMessage" or not isinstance(parsed, dict):
            with LOCK:
                rec.update(status=400, kind="refused", error="unsupported operation %r" % target)
            return self._error(400, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation;Sender",
                               "Operation %s is not supported here" % target)
        with LOCK:
            script = SCRIPT.pop(0) if SCRIPT else {"kind": "ok"}
        kind = script["kind"]
        if kind in ERRORS:
            status, shape, query_error, message = ERRORS[kind]
            with LOCK:
                rec.update(status=status, kind=kind)
            return self._error(status, shape, query_error, message)
        answer = {
            "MD5OfMessageBody": hashlib.md5(parsed.get("MessageBody", "").encode("utf-8")).hexdigest(),
            "MessageId": str(uuid.uuid4()),
        }
        if parsed.get("QueueUrl", "").endswith(".fifo"):
            answer["SequenceNumber"] = str(len(REQUESTS))
        with LOCK:
            rec.update(status=200, kind="ok")
        return self._send(200, answer)

    def _control(self, path, body):
        if path == "/_test/requests":
            with LOCK:
                data = [dict(r) for r in REQUESTS]
            return self._send(200, data)
        if path == "/_test/reset":
            with LOCK:
                del REQUESTS[:]
                del SCRIPT[:]
            return self._send(200, {})
        if path == "/_test/script":
            try:
                responses = json.loads(body.decode("utf-8"))["responses"]
                if not all(isinstance(r, dict) and r.get("kind") in KINDS for r in responses):
                    raise ValueError("each response needs a kind among %s" % ", ".join(KINDS))
            except (ValueError, KeyError, TypeError) as e:
                return self._send(400, {"error": str(e)})
            with LOCK:
                SCRIPT.extend(responses)
                queued = len(SCRIPT)
            return self._send(200, {"queued": queued})
        return self._send(404, {"error": "no such control endpoint %s" % path})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        sys.stderr.write("sqs_server: error handling a request: %r\n" % (sys.exc_info()[1],))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--credentials", action="append", default=[], metavar="AKID:SECRET[:TOKEN]")
    parser.add_argument("--region", default=None)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    for spec in args.credentials:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            parser.error("--credentials wants AKID:SECRET[:TOKEN], got %r" % spec)
        lambda_server.STATE.credentials[parts[0]] = {"secret": parts[1],
                                                    "token": parts[2] if len(parts) == 3 else None}
    lambda_server.STATE.region = args.region
    Handler.verbose = args.verbose
    server = Server(("127.0.0.1", args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    sys.stdout.write("listening on 127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
