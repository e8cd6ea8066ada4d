#!/usr/bin/env node
// Publishes a raw body to Hookline's native ingest (docs/contract.md §3.1) with the
// OFFICIAL Pusher server library for Node (npm `pusher`), as a real peer.
//
// Usage:
//   node publish.js --url http://127.0.0.1:PORT --app-id ID --key KEY --secret SECRET \
//                   [--timestamp-offset SECONDS] [--tamper] [--path /webhook_events] \
//                   [--timeout-ms 30000]  < body.json
//
// stdin is the request body (e.g. {"events":[...]}) and is sent BYTE-FOR-BYTE.
// stdout: one line {"status": <http status>, "body": "<response text>"}; the exit
// code is 0 whatever the status. Non-zero only on a crash, a connection error
// or a timeout (message on stderr).
//
// How the body is kept byte-exact (pusher 5.3.4, lib/requests.js `send`):
//   `pusher.post({path, body})` does `JSON.stringify(options.body)` before it
//   computes body_md5, signs and sends. A pre-serialised string would be sent
//   as a JSON *string literal* ("{\"events\":...}"), and an object would be
//   re-serialised (1.0 -> 1, duplicate keys collapsed). There is no option to
//   pass raw text, so for the duration of the (synchronous) part of the
//   post() call we replace JSON.stringify with a function that returns the
//   stdin bytes (as a Buffer) for our body marker and defers to the real
//   JSON.stringify for anything else. Everything else -- the auth query
//   (auth_key, auth_timestamp, auth_version, body_md5, auth_signature), the
//   headers (content-type: application/json, x-pusher-library) and the HTTP
//   request itself (node-fetch) -- is the library's own code path.
//
// --timestamp-offset S: the library stamps auth_timestamp from Date.now()
//   (synchronously, inside post()); Date.now is shifted by S seconds for the
//   duration of that synchronous call only, so the signature is valid for a
//   timestamp S seconds off (e.g. -700 for a stale request).
//
// --tamper: the library sends exactly what it signed, so a body that differs
//   from the signed one cannot go through post(). Instead the signed query
//   string is computed by the library's own exported helper
//   (require("pusher/lib/requests").createSignedQueryString, the function
//   post() itself uses) over the stdin body, and the request is sent with
//   Node's fetch carrying the same headers the library sends, but with ONE
//   byte of the body changed: the last ASCII letter or digit becomes another
//   one of the same class (a-z, A-Z, 0-9), so the length is unchanged and a
//   body whose last alphanumeric is inside a string or number stays valid
//   JSON. body_md5 and auth_signature are therefore those of the original.
"use strict"

const Pusher = require("pusher")
const requests = require("pusher/lib/requests")
const pusherVersion = require("pusher/lib/version")

function usage(msg) {
  if (msg) process.stderr.write(`publish.js: ${msg}\n`)
  process.stderr.write(
    "usage: node publish.js --url http://HOST:PORT --app-id ID --key KEY --secret SECRET " +
      "[--timestamp-offset SECONDS] [--tamper] [--path /webhook_events] [--timeout-ms MS] < body\n"
  )
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { path: "/webhook_events", timestampOffset: 0, tamper: false, timeoutMs: 30000 }
  const valued = {
    "--url": "url",
    "--app-id": "appId",
    "--key": "key",
    "--secret": "secret",
    "--timestamp-offset": "timestampOffset",
    "--path": "path",
    "--timeout-ms": "timeoutMs",
  }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    const eq = arg.indexOf("=")
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    if (arg === "--tamper") {
      opts.tamper = true
    } else if (arg === "--help" || arg === "-h") {
      usage()
    } else if (valued[arg]) {
      if (value === undefined) {
        if (i + 1 >= argv.length) usage(`${arg} needs a value`)
        value = argv[++i]
      }
      opts[valued[arg]] = value
    } else {
      usage(`unknown argument ${arg}`)
    }
  }
  for (const k of ["url", "appId", "key", "secret"]) {
    if (opts[k] === undefined) usage(`missing --${k === "appId" ? "app-id" : k}`)
  }
  opts.timestampOffset = Number(opts.timestampOffset)
  if (!Number.isFinite(opts.timestampOffset)) usage("--timestamp-offset must be a number")
  opts.timeoutMs = Number(opts.timeoutMs)
  if (!Number.isFinite(opts.timeoutMs) || opts.timeoutMs < 0) usage("--timeout-ms must be a number")
  return opts
}

function readStdin() {
  return require("fs").readFileSync(0) // a Buffer: the exact bytes
}

// Runs fn() with Date.now shifted by offsetSeconds (only while fn runs synchronously).
function withClockOffset(offsetSeconds, fn) {
  if (!offsetSeconds) return fn()
  const realNow = Date.now
  Date.now = () => realNow.call(Date) + offsetSeconds * 1000
  try {
    return fn()
  } finally {
    Date.now = realNow
  }
}

// Runs fn() with JSON.stringify(marker) returning `raw` (only while fn runs synchronously).
function withRawBody(marker, raw, fn) {
  const realStringify = JSON.stringify
  JSON.stringify = function (value, ...rest) {
    if (value === marker) return raw
    return realStringify.call(JSON, value, ...rest)
  }
  try {
    return fn()
  } finally {
    JSON.stringify = realStringify
  }
}

// Changes one byte: the last ASCII letter or digit becomes another of its class.
function tamper(body) {
  const out = Buffer.from(body)
  for (let i = out.length - 1; i >= 0; i--) {
    const c = out[i]
    if (c >= 0x30 && c <= 0x39) {
      out[i] = c === 0x39 ? 0x30 : c + 1
      return out
    }
    if ((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a)) {
      const base = c >= 0x61 ? 0x61 : 0x41
      out[i] = base + ((c - base + 1) % 26)
      return out
    }
  }
  // No alphanumeric at all: change the last byte (or add one to an empty body).
  if (out.length === 0) return Buffer.from(" ")
  out[out.length - 1] ^= 0x01
  return out
}

function emit(status, text) {
  process.stdout.write(JSON.stringify({ status, body: text }) + "\n")
}

function fail(err) {
  const cause = err && err.error ? ` (${err.error.message || err.error})` : ""
  process.stderr.write(`publish.js: ${err && err.message ? err.message : err}${cause}\n`)
  process.exit(1)
}

async function viaLibrary(pusher, opts, body) {
  // The marker is what we hand to post() as `body`; the library's JSON.stringify
  // call turns it into the exact stdin bytes.
  const marker = { hooklineRawBody: true }
  let promise
  withClockOffset(opts.timestampOffset, () =>
    withRawBody(marker, body, () => {
      promise = pusher.post({ path: opts.path, body: marker })
    })
  )
  try {
    const res = await promise
    emit(res.status, await res.text())
  } catch (err) {
    // post() rejects with a RequestError for status >= 400 (status and body
    // set) and for network errors/timeouts (status undefined).
    if (err && typeof err.status === "number") {
      emit(err.status, err.body === undefined ? "" : String(err.body))
    } else {
      fail(err)
    }
  }
}

async function viaHelperTampered(pusher, opts, body) {
  const config = pusher.config
  const path = config.prefixPath(opts.path)
  const query = withClockOffset(opts.timestampOffset, () =>
    requests.createSignedQueryString(config.token, {
      method: "POST",
      path,
      body, // a Buffer is truthy even when empty, as in viaLibrary
    })
  )
  const url = `${config.getBaseURL()}${path}?${query}`
  const sent = tamper(body)
  const controller = new AbortController()
  const timer = opts.timeoutMs ? setTimeout(() => controller.abort(), opts.timeoutMs) : null
  try {
    const res = await fetch(url, {
      method: "POST",
      body: sent,
      headers: {
        "x-pusher-library": "pusher-http-node " + pusherVersion,
        "content-type": "application/json",
      },
      redirect: "manual",
      signal: controller.signal,
    })
    emit(res.status, await res.text())
  } catch (err) {
    fail(err.cause ? new Error(`${err.message}: ${err.cause.message || err.cause}`) : err)
  } finally {
    if (timer) clearTimeout(timer)
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const u = new URL(opts.url)
  const useTLS = u.protocol === "https:"
  const pusher = new Pusher({
    appId: opts.appId,
    key: opts.key,
    secret: opts.secret,
    host: u.hostname, // IPv6 stays bracketed, as the library's getBaseURL needs
    port: u.port ? Number(u.port) : undefined,
    useTLS,
    timeout: opts.timeoutMs || undefined,
  })
  const body = readStdin()
  if (opts.tamper) {
    await viaHelperTampered(pusher, opts, body)
  } else {
    await viaLibrary(pusher, opts, body)
  }
}

main().catch(fail)
