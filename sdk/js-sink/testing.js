// A native test harness for JavaScript sinks: node runs the sink's
// `deliver` against a local HTTP server, with node's own `fetch`. No wasm,
// no daemon; `hookline sink run` and the daemon run the built component.
//
//     import { deliver } from "./sink.js";
//     import { Receiver, request } from "@hookline/sink/testing";
//
//     const receiver = await Receiver.start();
//     const outcome = await deliver(request({ config: { url: receiver.url("/in") }, events: [...] }));

import { createHmac } from "node:crypto";
import { createServer } from "node:http";

const KNOWN = new Set(["name", "channel", "user_id", "socket_id", "event", "data", "subscription_count"]);

/** A Pusher event (`{name, channel, user_id, …}`) as a sink sees it. */
export function toEvent(pusher) {
  const extra = {};
  for (const [key, value] of Object.entries(pusher)) {
    if (!KNOWN.has(key) || (key === "data" && typeof value !== "string")) extra[key] = value;
  }
  return {
    name: pusher.name,
    channel: pusher.channel,
    userId: pusher.user_id ?? null,
    socketId: pusher.socket_id ?? null,
    event: pusher.event ?? null,
    data: typeof pusher.data === "string" ? pusher.data : null,
    subscriptionCount: pusher.subscription_count ?? null,
    extra: Object.keys(extra).length === 0 ? null : extra,
  };
}

/** HMAC-SHA256 hex of `body` with `secret`: the `X-Pusher-Signature`. */
export function sign(secret, body) {
  return createHmac("sha256", secret).update(body).digest("hex");
}

let batches = 0;

/**
 * A request as Hookline hands it to `deliver`: the events (Pusher-shaped,
 * like the ones an app sends) in a body signed with `secret`, with the
 * Pusher and Hookline headers. Every field has a default.
 */
export function request({
  events = [{ name: "channel_occupied", channel: "test-channel" }],
  config = null,
  appId = "test-app",
  key = "test-key",
  secret = "test-secret",
  webhookId = "test-webhook",
  batchId = `test-batch-${++batches}`,
  attempt = 1,
  timeMs = Date.now(),
  timeoutMs = 10_000,
  headers = {},
} = {}) {
  const body = JSON.stringify({ time_ms: timeMs, events });
  return {
    appId,
    webhookId,
    batchId,
    attempt,
    timeMs,
    timeoutMs,
    events: events.map(toEvent),
    body,
    bodyBytes: new TextEncoder().encode(body),
    headers: {
      "X-Pusher-Key": key,
      "X-Pusher-Signature": sign(secret, body),
      "X-Hookline-Batch-Id": batchId,
      "X-Hookline-Batch-Time": String(timeMs),
      ...headers,
    },
    config,
  };
}

/**
 * Runs `body` with `fetch` refusing every origin not in `origins` the way
 * the sandbox does (`TypeError: NetworkError …`, nothing sent), as a
 * webhook's `allowed_hosts` would.
 */
export async function withAllowedHosts(origins, body) {
  const allowed = new Set(origins.map((o) => new URL(o).origin));
  const real = globalThis.fetch;
  globalThis.fetch = (input, init) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    if (!allowed.has(url.origin)) {
      return Promise.reject(new TypeError("NetworkError when attempting to fetch resource."));
    }
    return real(input, init);
  };
  try {
    return await body();
  } finally {
    globalThis.fetch = real;
  }
}

/** A local HTTP server that records every request and answers as told. */
export class Receiver {
  /** Starts one on 127.0.0.1, on a free port. */
  static async start() {
    const receiver = new Receiver();
    await new Promise((resolve) => receiver.server.listen(0, "127.0.0.1", resolve));
    return receiver;
  }

  constructor() {
    /** Every request so far: `{method, path, headers (lower-case names), body (text)}`. */
    this.requests = [];
    this.answers = [];
    this.fallback = { status: 200, headers: {}, body: "" };
    this.server = createServer((req, res) => {
      const chunks = [];
      req.on("data", (chunk) => chunks.push(chunk));
      req.on("end", () => {
        this.requests.push({
          method: req.method,
          path: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        });
        const answer = this.answers.shift() ?? this.fallback;
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
      });
    });
  }

  /** `http://127.0.0.1:PORT` followed by `path`. */
  url(path = "/") {
    return `http://127.0.0.1:${this.server.address().port}${path}`;
  }

  /** The origin to allow: `http://127.0.0.1:PORT`. */
  get origin() {
    return this.url("");
  }

  /**
   * Answers the next requests with these, in order (`{status, headers,
   * body}`, or a bare status), then as before.
   */
  script(...answers) {
    for (const a of answers) {
      this.answers.push(typeof a === "number" ? { status: a, headers: {}, body: "" } : { headers: {}, body: "", ...a });
    }
  }

  close() {
    return new Promise((resolve) => this.server.close(resolve));
  }
}
