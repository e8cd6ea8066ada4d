#!/usr/bin/env node
// What a consumer of Hookline's EventBridge events does before verifying one
// with the official Pusher library: take the event (here the text an SQS
// target received: the whole EventBridge event, as EventBridge serialised
// it), and rebuild the signed body with JSON.stringify(event.detail.payload).
//
// Usage: node eventbridge_detail.js < events.jsonl
// Each input line: a JSON string holding one event's text.
// Each output line: {"headers": {<detail.headers, lower-cased>, "content-type":
// "application/json"}, "body": JSON.stringify(event.detail.payload),
// "detail_type": ..., "source": ...}, the form verify.js reads.
"use strict"

const fs = require("fs")

for (const line of fs.readFileSync(0, "utf8").split("\n")) {
  if (!line.trim()) continue
  const event = JSON.parse(JSON.parse(line))
  const headers = { "content-type": "application/json" }
  for (const [name, value] of Object.entries(event.detail.headers)) headers[name.toLowerCase()] = value
  const out = {
    headers,
    body: JSON.stringify(event.detail.payload),
    detail_type: event["detail-type"],
    source: event.source,
  }
  process.stdout.write(JSON.stringify(out) + "\n")
}
