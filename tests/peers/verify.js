#!/usr/bin/env node
// Verifies Hookline deliveries (docs/contract.md §5) with the OFFICIAL Pusher server
// library for Node (npm `pusher`), as a real receiver would.
//
// Usage:
//   node verify.js --key KEY --secret SECRET < deliveries.jsonl
//
// Each non-empty input line: {"headers": {"<header name>": "<value>", ...}, "body": "<exact body text>"}
// Each output line (one per input line, same order):
//   {"valid": bool, "restringify_equal": bool, "content_type_ok": bool}
//     valid             pusher.webhook({headers, rawBody: body}).isValid()
//     restringify_equal JSON.stringify(JSON.parse(body)) === body (false if body is not JSON)
//     content_type_ok   headers["content-type"] === "application/json"
// Exit 0 whatever the results; non-zero only on a crash or a malformed input line.
//
// Notes on the library (pusher 5.3.4, lib/webhook.js):
// * WebHook reads request.headers["x-pusher-key"], ["x-pusher-signature"] and
//   ["content-type"] with exactly those lower-case names (as Node's http module
//   presents them). Header names in the input are lower-cased here, as Node's
//   http server would, so "X-Pusher-Key" works too.
// * isValid() is false unless content-type is EXACTLY "application/json" (no
//   "; charset=utf-8"): the body is only parsed when it is, and an unparsed
//   body is invalid. It is also false for a body that is not JSON.
// * The signature is compared as a string with the lower-case hex HMAC-SHA256
//   of the raw body: an upper-case hex signature is refused.
// * Unlike PyPI `pusher`, it does not look at time_ms at all.
"use strict"

const fs = require("fs")
const Pusher = require("pusher")

function usage(msg) {
  if (msg) process.stderr.write(`verify.js: ${msg}\n`)
  process.stderr.write("usage: node verify.js --key KEY --secret SECRET [--app-id ID] < deliveries.jsonl\n")
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { appId: "hookline-test" }
  const valued = { "--key": "key", "--secret": "secret", "--app-id": "appId" }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    const eq = arg.indexOf("=")
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    if (arg === "--help" || arg === "-h") usage()
    if (!valued[arg]) usage(`unknown argument ${arg}`)
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`)
      value = argv[++i]
    }
    opts[valued[arg]] = value
  }
  if (opts.key === undefined) usage("missing --key")
  if (opts.secret === undefined) usage("missing --secret")
  return opts
}

function main() {
  const opts = parseArgs(process.argv.slice(2))
  const pusher = new Pusher({ appId: opts.appId, key: opts.key, secret: opts.secret })
  const input = fs.readFileSync(0, "utf8")
  const lines = input.split("\n")
  let out = ""
  lines.forEach((line, idx) => {
    if (line.trim() === "") return
    let rec
    try {
      rec = JSON.parse(line)
    } catch (e) {
      throw new Error(`input line ${idx + 1} is not JSON: ${e.message}`)
    }
    if (!rec || typeof rec !== "object" || typeof rec.body !== "string") {
      throw new Error(`input line ${idx + 1} needs a string "body"`)
    }
    const headers = {}
    for (const [name, value] of Object.entries(rec.headers || {})) {
      headers[name.toLowerCase()] = value
    }
    const body = rec.body

    const valid = pusher.webhook({ headers, rawBody: body }).isValid() === true

    let restringifyEqual = false
    try {
      restringifyEqual = JSON.stringify(JSON.parse(body)) === body
    } catch (e) {
      restringifyEqual = false
    }

    const contentTypeOk = headers["content-type"] === "application/json"

    out += JSON.stringify({
      valid,
      restringify_equal: restringifyEqual,
      content_type_ok: contentTypeOk,
    }) + "\n"
  })
  process.stdout.write(out)
}

try {
  main()
} catch (e) {
  process.stderr.write(`verify.js: ${e && e.stack ? e.stack : e}\n`)
  process.exit(1)
}
