#!/usr/bin/env python3
"""A local HTTP receiver for the example sink components' tests (tests/sink_examples.rs).

Not run by itself: slack_receiver.py, cloudevents_receiver.py and datadog_receiver.py
each give serve() a validator for the shape their sink must send.

Binds 127.0.0.1 (--port 0 = any free port), prints exactly one line
"listening on 127.0.0.1:PORT" to stdout, then serves HTTP/1.1 until killed, or
until its stdin closes when stdin is a pipe (so a test process that dies
without killing it takes it along).

Every request outside /_test/ is read whole and passed to the validator,
validate(path, headers, body) -> summary (any JSON value), which raises
Invalid (or any exception) when the request does not have the shape. An
invalid request is answered 400 with the reason as text (as Slack answers
invalid_blocks), or the status Invalid gives; a valid one with the next scripted answer for its path, else
the path's default answer, else 200 "ok".

Test control (same port):
    POST /_test/script   {"path": "/p", "answers": [{"status", "headers", "body"}, ...]}
                         appends answers, used one per valid request to /p, in order
    POST /_test/default  {"path": "/p", "answer": {"status", "headers", "body"}}
    GET  /_test/requests JSON array of every request, in arrival order: {path, method,
                         headers (names lowercased), body (text), at (Unix seconds, float,
                         when it arrived), valid, error, summary, status (answered)}
"""

import argparse
import json
import os
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Invalid(Exception):
    """The request does not have the shape its sink promises: answered `status` (400 by
    default) with `body` (default: the reason as text)."""

    def __init__(self, reason, status=400, body=None):
        super().__init__(reason)
        self.status = status
        self.body = body


def serve(validate, description):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    args, _ = parser.parse_known_args()

    lock = threading.Lock()
    log = []
    scripts = {}
    defaults = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):  # the test reads /_test/requests instead
            pass

        def _answer(self, status, body=b"", headers=None):
            if isinstance(body, str):
                body = body.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self):
            if self.path == "/_test/requests":
                with lock:
                    text = json.dumps(log)
                self._answer(200, text, {"Content-Type": "application/json"})
            else:
                self._receive()

        def do_POST(self):
            if self.path == "/_test/script":
                command = json.loads(self._body())
                with lock:
                    scripts.setdefault(command["path"], []).extend(command["answers"])
                self._answer(204)
            elif self.path == "/_test/default":
                command = json.loads(self._body())
                with lock:
                    defaults[command["path"]] = command["answer"]
                self._answer(204)
            else:
                self._receive()

        def _receive(self):
            at = time.time()
            body = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            path = self.path
            refusal = None
            try:
                summary, error = validate(path, headers, body), None
            except Invalid as e:
                summary, error = None, str(e)
                refusal = {"status": e.status, "body": e.body if e.body is not None else error}
            except Exception as e:  # noqa: BLE001: any failure is the request's
                summary, error = None, f"{type(e).__name__}: {e}"
                refusal = {"status": 400, "body": error}
            with lock:
                if refusal is not None:
                    answer = refusal
                elif scripts.get(path):
                    answer = scripts[path].pop(0)
                else:
                    answer = defaults.get(path, {"status": 200, "body": "ok"})
                log.append({
                    "path": path,
                    "method": self.command,
                    "headers": headers,
                    "body": body.decode("utf-8", "replace"),
                    "at": at,
                    "valid": error is None,
                    "error": error,
                    "summary": summary,
                    "status": answer["status"],
                })
            self._answer(answer["status"], answer.get("body", ""), answer.get("headers"))

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        def exit_with_parent():
            sys.stdin.buffer.read()
            os._exit(0)

        threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)
