#!/usr/bin/env python3
"""Local AWS Lambda Invoke test server that VERIFIES the SigV4 signature of every request.

Usage:
    python lambda_server.py [--port 0] [--credentials AKID:SECRET[:TOKEN]]... [--region R]
                            [--max-payload-bytes N] [--max-event-payload-bytes N] [--verbose]

Binds 127.0.0.1 (port 0 = any free port), prints exactly one line
"listening on 127.0.0.1:PORT" to stdout, then serves HTTP/1.1 (keep-alive, threaded)
until SIGTERM/SIGINT, and exits 0. Request logging goes to stderr only with --verbose.

Lambda API served (signed, AWS Signature Version 4, service "lambda"):
    POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=...]
        X-Amz-Invocation-Type: Event | RequestResponse (default) | DryRun
        X-Amz-Log-Type: None | Tail (optional), X-Amz-Client-Context (optional)
    Default answers, as AWS: Event -> 202 empty body; RequestResponse -> 200 body `null`
    with X-Amz-Executed-Version; DryRun -> 204.

Signature check: the signature is RECOMPUTED with botocore's own SigV4Auth (canonical
request, string to sign, signing key), over the request exactly as received: raw path
(botocore, like every AWS SDK for non-S3 services, URI-encodes the already-encoded path
once more, so both `arn%3Aaws%3A...` and `arn:aws:...` paths verify when the client signed
them that way), query re-canonicalised from its decoded pairs, only the headers named in
SignedHeaders, the body, and the timestamp of X-Amz-Date (or Date).

Test control (plain HTTP, unsigned, same port):
    POST /_test/script      {"function": NAME, "responses": [{"kind": ...}, ...]}  appends
    POST /_test/config      {"credentials": {AKID: {"secret": S, "token": T|null}},
                             "max_payload_bytes": N|null, "max_event_payload_bytes": N|null,
                             "region": R|null, "account_id": "123456789012"}
                            (keys given replace the current value; others are kept)
    GET  /_test/config      current configuration
    GET  /_test/invocations JSON array of every non-/_test/ request, refused ones included
    POST /_test/reset       clears the invocation log and every script queue
    Control errors answer 400 {"error": "..."}.

Scripted responses: a FIFO queue per function name (the decoded FunctionName path segment,
e.g. "my-fn" or a full ARN, exactly as the client wrote it; the Qualifier query parameter is
not part of the key). The queue "*" is used when the function's own queue is empty; when
both are empty the default answer applies. Every response may carry "delay_ms" (sleep
before answering) and "headers" (extra response headers). Kinds:
    ok              the default answer; RequestResponse may set "payload" (JSON value, default
                    null), "body" (raw text) and "executed_version"
    function_error  200, X-Amz-Function-Error: Unhandled ("function_error" overrides), body
                    {"errorMessage":"boom","errorType":"Error"} ("error_message", "error_type");
                    on Event/DryRun invocations the function "ran" asynchronously: 202/204
    throttle        429 TooManyRequestsException, Retry-After: N if "retry_after" is given,
                    body {"Reason":R,"Type":"User","message":"Rate Exceeded."} ("reason")
    not_found       404 ResourceNotFoundException {"Type":"User","Message":"Function not found: ARN"}
    access_denied   403 AccessDeniedException {"Message":"User: ... is not authorized to perform:
                    lambda:InvokeFunction on resource: ARN ..."} (not modeled for Lambda)
    too_large       413 RequestTooLargeException {"Type":"User","message":"Request must be smaller
                    than 6291456 bytes for the Invoke operation"}
    service_error   500 ServiceException {"Type":"Service","Message":"..."}
    conflict        409 ResourceConflictException {"Type":"User","message":"..."}
    not_ready       502 ResourceNotReadyException {"Type":"Service","message":"..."}
    invalid_param   400 InvalidParameterValueException {"Type":"User","message":"..."}
    error           any error of Invoke in botocore's Lambda model: "error_type": SHAPE; status
                    and message member from the model
    raw             "status", optional "body" (text or JSON value) and "headers", as given
    disconnect      close the connection without answering
Error kinds take "message" to replace the default message. Every error answer has the
header x-amzn-ErrorType: <name> and Content-Type: application/json.

Invocation record (GET /_test/invocations), one per request in arrival order:
    method, path (raw, as received), query (raw), function (decoded path segment or null),
    qualifier, invocation_type, headers {lower-case name: value}, body (UTF-8, invalid bytes
    replaced), body_base64 (exact), signature_valid, access_key, region, status (null for
    "disconnect"), error (why refused, else null), response_kind ("refused", "ok", ...,
    or the scripted kind), time; on a signature mismatch also canonical_request and
    string_to_sign as this server computed them.
"""

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import json
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

SERVICE = "lambda"
ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
MAX_SKEW = datetime.timedelta(minutes=15)
INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
INVOCATION_TYPES = ("Event", "RequestResponse", "DryRun")

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."

# Scripted error kinds: (HTTP status, x-amzn-ErrorType, message member name as in the
# Lambda service model, "Type" body member or None, default message).
# Status codes and member casing are those of botocore/data/lambda/2015-03-31/service-2.json
# (AccessDeniedException is not in the Lambda model: AWS's generic IAM denial is used).
ERROR_KINDS = {
    "throttle": (429, "TooManyRequestsException", "message", "User", "Rate Exceeded."),
    "not_found": (404, "ResourceNotFoundException", "Message", "User", None),
    "access_denied": (403, "AccessDeniedException", "Message", None, None),
    "too_large": (413, "RequestTooLargeException", "message", "User", None),
    "service_error": (500, "ServiceException", "Message", "Service", "Internal error. Please try again later."),
    "conflict": (409, "ResourceConflictException", "message", "User",
                 "The operation cannot be performed at this time. "
                 "The function is currently in the following state: Pending"),
    "not_ready": (502, "ResourceNotReadyException", "message", "Service",
                  "The function is inactive and its VPC connection is no longer available. "
                  "Wait for the VPC connection to reestablish and try again."),
    "invalid_param": (400, "InvalidParameterValueException", "message", "User",
                      "One or more parameters values were invalid."),
}
KINDS = ("ok", "function_error", "raw", "disconnect", "error") + tuple(ERROR_KINDS)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


class Refused(Exception):
    """An authentication refusal: answered as an AWS error, recorded with its reason."""

    def __init__(self, status, error_type, message, reason, signature_valid=False, message_key="message"):
        super().__init__(reason)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.reason = reason
        self.signature_valid = signature_valid
        self.message_key = message_key


class _ReceivedHeadersSigV4(SigV4Auth):
    """botocore's SigV4Auth, with the set of signed headers taken from the request's
    SignedHeaders (as a server must) instead of botocore's client-side choice."""

    def __init__(self, credentials, region, signed_headers):
        super().__init__(credentials, SERVICE, region)
        self._signed = signed_headers

    def headers_to_sign(self, request):
        return self._signed


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.credentials = {}  # akid -> {"secret": str, "token": str|None}
        self.region = None  # if set, the credential scope's region must equal it
        self.max_payload_bytes = None
        self.max_event_payload_bytes = None
        self.account_id = "123456789012"
        self.scripts = {}  # function name (decoded path segment) or "*" -> [response dict]
        self.invocations = []

    def config_json(self):
        return {
            "credentials": {k: dict(v) for k, v in self.credentials.items()},
            "region": self.region,
            "max_payload_bytes": self.max_payload_bytes,
            "max_event_payload_bytes": self.max_event_payload_bytes,
            "account_id": self.account_id,
        }


STATE = State()


def _parse_credentials_map(obj):
    if not isinstance(obj, dict):
        raise ValueError('"credentials" must be an object {AKID: {"secret": ..., "token": ...}}')
    out = {}
    for akid, v in obj.items():
        if isinstance(v, str):
            v = {"secret": v}
        if not isinstance(v, dict) or not isinstance(v.get("secret"), str):
            raise ValueError('credentials for %r need a string "secret"' % akid)
        token = v.get("token")
        if token is not None and not isinstance(token, str):
            raise ValueError('"token" for %r must be a string or null' % akid)
        out[str(akid)] = {"secret": v["secret"], "token": token}
    return out


def _opt_int(name, v):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("%s must be a non-negative integer or null" % name)
    return v


def _validate_response(r):
    if not isinstance(r, dict) or r.get("kind") not in KINDS:
        raise ValueError("each response needs a \"kind\" among %s: %r" % (", ".join(KINDS), r))
    if r["kind"] == "error" and not isinstance(r.get("error_type"), str):
        raise ValueError('kind "error" needs "error_type" (a modeled Invoke error shape name)')
    if r["kind"] == "raw" and not isinstance(r.get("status"), int):
        raise ValueError('kind "raw" needs an integer "status"')
    if r["kind"] == "error":
        _model_error(r["error_type"])  # raises ValueError if unknown
    return dict(r)


_MODEL = None
_MODEL_LOCK = threading.Lock()


def _model_error(shape_name):
    """(status, message member, sender fault) of a modeled Invoke error, from botocore's model."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            from botocore.loaders import Loader

            _MODEL = Loader().load_service_model("lambda", "service-2")
    errors = {e["shape"] for e in _MODEL["operations"]["Invoke"]["errors"]}
    if shape_name not in errors:
        raise ValueError("%r is not an error of Lambda Invoke in botocore's model" % shape_name)
    shape = _MODEL["shapes"][shape_name]
    members = shape.get("members", {})
    msg_key = "Message" if "Message" in members else "message"
    err = shape.get("error", {})
    return err.get("httpStatusCode", 400), msg_key, bool(err.get("senderFault"))


# --------------------------------------------------------------------------- signature


def _parse_authorization(value):
    if not value.startswith(ALGORITHM + " "):
        raise Refused(403, "IncompleteSignatureException",
                      "Authorization header requires the %s algorithm." % ALGORITHM,
                      "unsupported Authorization scheme: %r" % value.split(" ", 1)[0])
    fields = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        part = part.strip()
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise Refused(403, "IncompleteSignatureException",
                          "Authorization header is malformed.", "malformed Authorization part %r" % part)
        fields[k.strip()] = v.strip()
    for need in ("Credential", "SignedHeaders", "Signature"):
        if need not in fields:
            raise Refused(403, "IncompleteSignatureException",
                          "Authorization header requires '%s' parameter. Authorization=%s" % (need, value),
                          "Authorization has no %s" % need)
    cred = fields["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise Refused(403, "IncompleteSignatureException",
                      "Credential should be scoped to a valid region, service and date. ",
                      "malformed Credential %r" % fields["Credential"])
    akid, date, region, service, _ = cred
    signed = [h for h in fields["SignedHeaders"].split(";")]
    return akid, date, region, service, signed, fields["Signature"]


def _timestamp(headers):
    amz = headers.get("x-amz-date")
    if amz is not None:
        try:
            t = datetime.datetime.strptime(amz.strip(), SIGV4_TIMESTAMP).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise Refused(403, "IncompleteSignatureException", "Date must be in ISO-8601 'basic format'. "
                          "Got '%s'." % amz, "unparseable X-Amz-Date %r" % amz)
        return amz.strip(), t
    date = headers.get("date")
    if date is not None:
        try:
            t = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            t = None
        if t is None:
            raise Refused(403, "IncompleteSignatureException", "Date header is malformed.",
                          "unparseable Date %r" % date)
        t = t.astimezone(datetime.timezone.utc)
        return t.strftime(SIGV4_TIMESTAMP), t
    raise Refused(403, "IncompleteSignatureException",
                  "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ",
                  "no X-Amz-Date or Date header")


def verify_sigv4(method, raw_path, raw_query, header_items, body):
    """Verifies a request. Returns (akid, region). Raises Refused (with akid/region attributes
    set where known) on any failure."""
    headers = {}
    for k, v in header_items:
        headers.setdefault(k.lower(), v)
    auth = headers.get("authorization")
    if auth is None:
        raise Refused(403, "MissingAuthenticationTokenException", "Missing Authentication Token",
                      "no Authorization header (unsigned request)")
    akid, scope_date, region, service, signed, signature = _parse_authorization(auth)
    info = {"akid": akid, "region": region}
    try:
        with STATE.lock:
            creds = STATE.credentials.get(akid)
            want_region = STATE.region
        if creds is None:
            raise Refused(403, "UnrecognizedClientException", INVALID_TOKEN,
                          "unknown access key id %r" % akid)
        if service != SERVICE:
            raise Refused(403, "InvalidSignatureException",
                          "Credential should be scoped to correct service: '%s'. " % SERVICE,
                          "credential scope service %r is not %r" % (service, SERVICE))
        if want_region is not None and region != want_region:
            raise Refused(403, "InvalidSignatureException",
                          "Credential should be scoped to a valid region. ",
                          "credential scope region %r is not %r" % (region, want_region))
        token = headers.get("x-amz-security-token")
        if creds.get("token") is not None:
            if token is None:
                raise Refused(403, "UnrecognizedClientException", INVALID_TOKEN,
                              "no X-Amz-Security-Token for %s (a session token is configured)" % akid)
            if not hmac.compare_digest(token.encode(), creds["token"].encode()):
                raise Refused(403, "UnrecognizedClientException", INVALID_TOKEN,
                              "X-Amz-Security-Token does not match the one configured for %s" % akid)
        elif token is not None:
            raise Refused(403, "UnrecognizedClientException", INVALID_TOKEN,
                          "X-Amz-Security-Token sent but none is configured for %s" % akid)
        if "host" not in signed:
            raise Refused(403, "IncompleteSignatureException",
                          "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
                          "host is not among SignedHeaders %r" % ";".join(signed))
        if signed != sorted(signed) or any(h != h.lower() or not h for h in signed):
            raise Refused(403, "InvalidSignatureException", SIGNATURE_MISMATCH,
                          "SignedHeaders %r not lower-case and sorted" % ";".join(signed))
        timestamp, when = _timestamp(headers)

        # Headers to sign: exactly the SignedHeaders, each with all its received values.
        signed_map = HTTPHeaders()
        for name in signed:
            values = [v for k, v in header_items if k.lower() == name]
            if not values:
                raise Refused(403, "InvalidSignatureException", SIGNATURE_MISMATCH,
                              "signed header %r is not in the request" % name)
            for v in values:
                signed_map[name] = v
        host = headers.get("host", "localhost")
        req = AWSRequest(
            method=method,
            url="http://%s%s" % (host, raw_path),
            data=body,
            # The query canonicalised from its decoded pairs (botocore re-encodes them
            # with SigV4's URI encoding), as AWS and the Rust signer do.
            params=urllib.parse.parse_qsl(raw_query, keep_blank_values=True),
        )
        for k, v in header_items:
            req.headers[k] = v
        req.context["timestamp"] = timestamp

        body_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        content_sha = headers.get("x-amz-content-sha256")
        if content_sha is not None and content_sha != body_hash:
            # (also covers UNSIGNED-PAYLOAD, which Lambda does not take)
            raise Refused(403, "InvalidSignatureException",
                          "The provided 'x-amz-content-sha256' header does not match what was computed.",
                          "x-amz-content-sha256 %r is not the SHA-256 of the body (%s)" % (content_sha, body_hash))

        signer = _ReceivedHeadersSigV4(
            Credentials(akid, creds["secret"], creds.get("token")), region, signed_map
        )
        canonical = signer.canonical_request(req)
        string_to_sign = signer.string_to_sign(req, canonical)
        expected = signer.signature(string_to_sign, req)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            r = Refused(403, "InvalidSignatureException", SIGNATURE_MISMATCH,
                        "signature mismatch (got %s, computed %s)" % (signature, expected))
            r.canonical_request = canonical
            r.string_to_sign = string_to_sign
            raise r
        # Signature is right; the remaining checks do not change that.
        if scope_date != timestamp[:8]:
            raise Refused(403, "InvalidSignatureException",
                          "Credential should be scoped to a valid date. ",
                          "credential scope date %s is not the request date %s" % (scope_date, timestamp[:8]),
                          signature_valid=True)
        now = _now()
        fmt = lambda t: t.strftime(SIGV4_TIMESTAMP)  # noqa: E731
        if when < now - MAX_SKEW:
            raise Refused(403, "InvalidSignatureException",
                          "Signature expired: %s is now earlier than %s (%s - 15 min.)"
                          % (fmt(when), fmt(now - MAX_SKEW), fmt(now)),
                          "request time %s is more than 15 minutes in the past" % fmt(when),
                          signature_valid=True)
        if when > now + MAX_SKEW:
            raise Refused(403, "InvalidSignatureException",
                          "Signature not yet current: %s is still later than %s (%s + 15 min.)"
                          % (fmt(when), fmt(now + MAX_SKEW), fmt(now)),
                          "request time %s is more than 15 minutes in the future" % fmt(when),
                          signature_valid=True)
        return akid, region
    except Refused as r:
        r.akid = info["akid"]
        r.region = info["region"]
        raise


# --------------------------------------------------------------------------- handler


def _function_arn(name, qualifier, region, account):
    if name.startswith("arn:"):
        arn = name
    else:
        parts = name.split(":")
        if len(parts) >= 3 and parts[1] == "function":  # ACCOUNT:function:NAME[:QUAL]
            arn = "arn:aws:lambda:%s:%s" % (region or "us-east-1", name)
        else:
            arn = "arn:aws:lambda:%s:%s:function:%s" % (region or "us-east-1", account, name)
    if qualifier:
        arn += ":" + qualifier
    return arn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hookline-lambda-test/1"

    def version_string(self):
        return self.server_version
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("lambda_server: %s %s\n" % (self.address_string(), fmt % args))

    # -- plumbing

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        hdrs = list(headers)
        names = {k.lower() for k, _ in hdrs}
        if "x-amzn-requestid" not in names:
            hdrs.append(("x-amzn-RequestId", str(uuid.uuid4())))
        for k, v in hdrs:
            self.send_header(k, v)
        if status not in (204, 304) and not (100 <= status < 200):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)
        self.wfile.flush()

    def _send_json(self, status, obj, headers=()):
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send(status, body, [("Content-Type", "application/json")] + list(headers))

    def _send_aws_error(self, status, error_type, body_obj, headers=()):
        self._send_json(status, body_obj, [("x-amzn-ErrorType", error_type)] + list(headers))

    # -- dispatch

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        try:
            body = self._read_body()
        except (ValueError, OSError) as e:
            self.close_connection = True
            self._send_json(400, {"message": "bad request body: %s" % e})
            return
        target = self.path
        if target.startswith("http://") or target.startswith("https://"):
            sp = urllib.parse.urlsplit(target)
            target = sp.path + ("?" + sp.query if sp.query else "")
        raw_path, _, raw_query = target.partition("?")
        if raw_path.startswith("/_test/"):
            self._control(raw_path, body)
        else:
            self._aws(raw_path, raw_query, body)

    # -- control API

    def _control(self, path, body):
        try:
            if path == "/_test/invocations" and self.command == "GET":
                with STATE.lock:
                    data = list(STATE.invocations)
                return self._send_json(200, data)
            if path == "/_test/config" and self.command == "GET":
                with STATE.lock:
                    data = STATE.config_json()
                return self._send_json(200, data)
            if self.command != "POST":
                return self._send_json(404, {"error": "no such control endpoint: %s %s" % (self.command, path)})
            obj = json.loads(body.decode("utf-8") or "{}") if path != "/_test/reset" else {}
            if not isinstance(obj, dict):
                raise ValueError("body must be a JSON object")
            if path == "/_test/script":
                fn = obj.get("function")
                responses = obj.get("responses")
                if not isinstance(fn, str) or not isinstance(responses, list):
                    raise ValueError('body must be {"function": NAME, "responses": [...]}')
                checked = [_validate_response(r) for r in responses]
                with STATE.lock:
                    q = STATE.scripts.setdefault(fn, [])
                    q.extend(checked)
                    n = len(q)
                return self._send_json(200, {"function": fn, "queued": n})
            if path == "/_test/config":
                updates = {}
                if "credentials" in obj:
                    updates["credentials"] = _parse_credentials_map(obj["credentials"])
                for key in ("max_payload_bytes", "max_event_payload_bytes"):
                    if key in obj:
                        updates[key] = _opt_int(key, obj[key])
                if "region" in obj:
                    if obj["region"] is not None and not isinstance(obj["region"], str):
                        raise ValueError("region must be a string or null")
                    updates["region"] = obj["region"]
                if "account_id" in obj:
                    if not isinstance(obj["account_id"], str):
                        raise ValueError("account_id must be a string")
                    updates["account_id"] = obj["account_id"]
                unknown = set(obj) - {"credentials", "max_payload_bytes", "max_event_payload_bytes",
                                      "region", "account_id"}
                if unknown:
                    raise ValueError("unknown config keys: %s" % ", ".join(sorted(unknown)))
                with STATE.lock:
                    for k, v in updates.items():
                        setattr(STATE, k, v)
                    data = STATE.config_json()
                return self._send_json(200, data)
            if path == "/_test/reset":
                with STATE.lock:
                    STATE.invocations.clear()
                    STATE.scripts.clear()
                return self._send_json(200, {"reset": True})
            return self._send_json(404, {"error": "no such control endpoint: %s %s" % (self.command, path)})
        except (ValueError, UnicodeDecodeError) as e:
            return self._send_json(400, {"error": str(e)})

    # -- Lambda API

    def _aws(self, raw_path, raw_query, body):
        header_items = [(k, v) for k, v in self.headers.items()]
        lower = {}
        for k, v in header_items:
            k = k.lower()
            lower[k] = v if k not in lower else lower[k] + ", " + v
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        function = None
        if raw_path.startswith(INVOKE_PREFIX) and raw_path.endswith(INVOKE_SUFFIX):
            seg = raw_path[len(INVOKE_PREFIX):-len(INVOKE_SUFFIX)]
            if seg and "/" not in seg:
                function = urllib.parse.unquote(seg)
        invocation_type = lower.get("x-amz-invocation-type", "RequestResponse") if function else None
        rec = {
            "method": self.command,
            "path": raw_path,
            "query": raw_query,
            "function": function,
            "qualifier": query.get("Qualifier"),
            "invocation_type": invocation_type,
            "headers": lower,
            "body": body.decode("utf-8", errors="replace"),
            "body_base64": base64.b64encode(body).decode("ascii"),
            "signature_valid": False,
            "access_key": None,
            "region": None,
            "status": None,
            "error": None,
            "response_kind": None,
            "time": _now().isoformat(),
        }
        with STATE.lock:
            STATE.invocations.append(rec)  # recorded first: even a crash below stays visible

        def done(status, error=None, kind=None):
            with STATE.lock:
                rec["status"] = status
                rec["error"] = error
                rec["response_kind"] = kind

        try:
            akid, region = verify_sigv4(self.command, raw_path, raw_query, header_items, body)
        except Refused as r:
            with STATE.lock:
                if getattr(r, "canonical_request", None) is not None:
                    # what this server signed, to compare with the client's own debug output
                    rec["canonical_request"] = r.canonical_request
                    rec["string_to_sign"] = r.string_to_sign
                rec["signature_valid"] = r.signature_valid
                rec["access_key"] = getattr(r, "akid", None)
                rec["region"] = getattr(r, "region", None)
            done(r.status, r.reason, "refused")
            return self._send_aws_error(r.status, r.error_type, {r.message_key: r.message})
        with STATE.lock:
            rec["signature_valid"] = True
            rec["access_key"] = akid
            rec["region"] = region

        if function is None or self.command != "POST":
            done(404, "unknown operation %s %s" % (self.command, raw_path), "refused")
            return self._send_aws_error(404, "UnknownOperationException", {"Message": None})
        if invocation_type not in INVOCATION_TYPES:
            msg = ("1 validation error detected: Value '%s' at 'invocationType' failed to satisfy "
                   "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
                   % invocation_type)
            done(400, "bad X-Amz-Invocation-Type %r" % invocation_type, "refused")
            return self._send_aws_error(400, "InvalidParameterValueException", {"Type": "User", "message": msg})

        with STATE.lock:
            limit = STATE.max_payload_bytes
            if invocation_type == "Event" and STATE.max_event_payload_bytes is not None:
                limit = STATE.max_event_payload_bytes
            account = STATE.account_id
        if limit is not None and len(body) > limit:
            op = "Invoke" if invocation_type != "Event" else "InvokeAsync"
            done(413, "payload of %d bytes is over the limit of %d" % (len(body), limit), "refused")
            return self._send_aws_error(413, "RequestTooLargeException", {
                "Type": "User",
                "message": "Request must be smaller than %d bytes for the %s operation" % (limit, op)})

        with STATE.lock:
            script = None
            for key in (function, "*"):
                q = STATE.scripts.get(key)
                if q:
                    script = q.pop(0)
                    break
        script = script or {"kind": "ok"}
        kind = script["kind"]
        if script.get("delay_ms"):
            time.sleep(float(script["delay_ms"]) / 1000.0)
        extra = [(str(k), str(v)) for k, v in (script.get("headers") or {}).items()]
        qualifier = query.get("Qualifier")

        if kind == "disconnect":
            done(None, None, kind)
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if kind == "raw":
            raw_body = script.get("body", "")
            raw_body = raw_body.encode() if isinstance(raw_body, str) else json.dumps(raw_body).encode()
            done(script["status"], None, kind)
            return self._send(script["status"], raw_body, extra)
        if kind in ERROR_KINDS or kind == "error":
            if kind == "error":
                status, msg_key, sender = _model_error(script["error_type"])
                etype, type_field = script["error_type"], ("User" if sender else "Service")
                default_msg = "%s (scripted)" % etype
            else:
                status, etype, msg_key, type_field, default_msg = ERROR_KINDS[kind]
                arn = _function_arn(function, qualifier, region, account)
                if kind == "not_found":
                    default_msg = "Function not found: %s" % arn
                elif kind == "access_denied":
                    default_msg = ("User: arn:aws:iam::%s:user/hookline is not authorized to perform: "
                                   "lambda:InvokeFunction on resource: %s because no identity-based policy "
                                   "allows the lambda:InvokeFunction action" % (account, arn))
                elif kind == "too_large":
                    default_msg = "Request must be smaller than 6291456 bytes for the Invoke operation"
            obj = {}
            if kind == "throttle":
                obj["Reason"] = script.get("reason", "ReservedFunctionConcurrentInvocationLimitExceeded")
            if type_field is not None:
                obj["Type"] = type_field
            obj[msg_key] = script.get("message", default_msg)
            hdrs = list(extra)
            if kind == "throttle" and script.get("retry_after") is not None:
                ra = script["retry_after"]
                hdrs.append(("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra)))
            done(status, None, kind)
            return self._send_aws_error(status, etype, obj, hdrs)

        # ok / function_error: the function "ran".
        if invocation_type == "Event":
            done(202, None, kind)
            return self._send(202, b"", extra)
        if invocation_type == "DryRun":
            done(204, None, kind)
            return self._send(204, b"", extra)
        version = script.get("executed_version")
        if version is None:
            version = qualifier if qualifier and (qualifier.isdigit() or qualifier == "$LATEST") else "$LATEST"
        hdrs = [("Content-Type", "application/json"), ("X-Amz-Executed-Version", version)]
        if kind == "function_error":
            hdrs.append(("X-Amz-Function-Error", script.get("function_error", "Unhandled")))
            payload = json.dumps({"errorMessage": script.get("error_message", "boom"),
                                  "errorType": script.get("error_type", "Error")},
                                 separators=(",", ":")).encode()
        elif "body" in script:
            payload = script["body"].encode() if isinstance(script["body"], str) else bytes(script["body"])
        else:
            payload = json.dumps(script.get("payload"), separators=(",", ":")).encode()
        if (lower.get("x-amz-log-type") or "").lower() == "tail":
            rid = str(uuid.uuid4())
            log = ("START RequestId: %s Version: %s\nEND RequestId: %s\nREPORT RequestId: %s\t"
                   "Duration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 64 MB\t\n"
                   % (rid, version, rid, rid))
            hdrs.append(("X-Amz-Log-Result", base64.b64encode(log.encode()).decode()))
        done(200, None, kind)
        return self._send(200, payload, hdrs + extra)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # A client dropping a kept-alive connection is normal: stay quiet. Anything else
        # is a bug of this server: one line on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        sys.stderr.write("lambda_server: error handling a request from %s: %r\n" % (client_address, exc))
        sys.stderr.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--credentials", action="append", default=[], metavar="AKID:SECRET[:TOKEN]",
                        help="accepted credentials (repeatable)")
    parser.add_argument("--region", default=None, help="require this region in the credential scope")
    parser.add_argument("--max-payload-bytes", type=int, default=None)
    parser.add_argument("--max-event-payload-bytes", type=int, default=None)
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()

    for spec in args.credentials:
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            parser.error("--credentials wants AKID:SECRET[:TOKEN], got %r" % spec)
        STATE.credentials[parts[0]] = {"secret": parts[1], "token": parts[2] if len(parts) == 3 else None}
    STATE.region = args.region
    STATE.max_payload_bytes = args.max_payload_bytes
    STATE.max_event_payload_bytes = args.max_event_payload_bytes
    Handler.verbose = args.verbose

    server = Server(("127.0.0.1", args.port), Handler)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write("listening on 127.0.0.1:%d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
