#!/usr/bin/env python3
"""Verify Hookline deliveries (docs/contract.md section 5) with the OFFICIAL PyPI `pusher` library.

Usage:
    python verify.py --app-id ID --key KEY --secret SECRET < deliveries.jsonl

Each non-empty input line: {"headers": {"<header name>": "<value>", ...}, "body": "<exact body text>"}
Each output line (one per input line, same order): {"valid": bool}
    valid: pusher.Pusher(app_id, key, secret).validate_webhook(
               key=headers["x-pusher-key"], signature=headers["x-pusher-signature"], body=body)
           returned a value other than None and raised nothing.
Exit 0 whatever the results; non-zero only on a crash or a malformed input line.

Notes on the library (pusher 3.3.4, authentication_client.validate_webhook):
* It returns None when the key differs, the signature is not the lower-case
  hex HMAC-SHA256 of the body, the body is not JSON, time_ms is missing or 0,
  or |now - time_ms| > 300000 ms (5 minutes, in either direction): old bodies
  are refused, which is expected.
* It does not look at Content-Type (unlike npm `pusher`).
* A missing header means key/signature None, which makes it raise TypeError;
  that is reported as valid=false. A JSON body that is not an object (e.g. an
  array) makes it raise AttributeError: also valid=false.
* pusher.Pusher() refuses an app id that is not all digits (util.app_id_re,
  ValueError "Invalid app id") although validate_webhook never uses it. Since
  Hookline app ids are free strings (soketi's "app-id" style), a non-numeric
  --app-id is replaced by "1" for the constructor (noted on stderr).
Header names in the input are lower-cased first.
"""

import argparse
import json
import re
import sys

import pusher


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app-id", default="1", help="app id (only for the constructor; default 1)")
    parser.add_argument("--key", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()

    app_id = args.app_id
    if not re.fullmatch(r"[0-9]+", app_id):
        sys.stderr.write(
            "verify.py: PyPI pusher only accepts numeric app ids; using app_id=1 "
            "instead of %r (webhook validation does not use it)\n" % app_id
        )
        app_id = "1"
    client = pusher.Pusher(app_id=app_id, key=args.key, secret=args.secret)

    data = sys.stdin.buffer.read().decode("utf-8")
    out = []
    for lineno, line in enumerate(data.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise SystemExit("verify.py: input line %d is not JSON: %s" % (lineno, e))
        if not isinstance(rec, dict) or not isinstance(rec.get("body"), str):
            raise SystemExit('verify.py: input line %d needs a string "body"' % lineno)
        headers = {str(k).lower(): v for k, v in (rec.get("headers") or {}).items()}
        try:
            result = client.validate_webhook(
                key=headers.get("x-pusher-key"),
                signature=headers.get("x-pusher-signature"),
                body=rec["body"],
            )
            valid = result is not None
        except Exception:  # the library raises on missing/odd inputs: not valid
            valid = False
        out.append(json.dumps({"valid": valid}, separators=(",", ":")))
    sys.stdout.write("".join(o + "\n" for o in out))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
