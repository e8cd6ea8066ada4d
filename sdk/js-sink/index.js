// Helpers for Hookline sink components written in JavaScript. The build
// command (`hookline-sink-js build`) wraps the sink module so the host sees
// the WIT world `hookline:sink/sink`; see README.md. The same module runs
// natively under node (its tests), where `fetch` is node's.

/** The target has the batch. */
export function delivered() {
  return { tag: "delivered" };
}

/**
 * A transient failure: the batch is retried with the webhook's backoff, no
 * sooner than `afterMs` from now if given (a target's `Retry-After`).
 */
export function retry(reason, afterMs) {
  return { tag: "retry", val: { reason: String(reason ?? ""), afterMs: afterMs == null ? undefined : Number(afterMs) } };
}

/** A failure no retry can fix: the batch goes to the dead letters. */
export function reject(reason) {
  return { tag: "reject", val: String(reason ?? "") };
}

/** `Retry-After` (delta-seconds or an HTTP date) in milliseconds, or undefined. */
export function retryAfterMs(value) {
  if (value == null) return undefined;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const when = Date.parse(text);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, when - Date.now());
}

/** The most of an answer's body a reason quotes. */
const EXCERPT = 200;

function excerpt(text) {
  const line = text.slice(0, EXCERPT).split(/\s+/).filter(Boolean).join(" ");
  return text.length > EXCERPT ? `${line}…` : line;
}

/**
 * A `fetch` Response read the way Hookline reads an HTTP webhook's answer:
 * 2xx is delivered; 429 is retried after its `Retry-After`; 408, 425 and
 * 5xx are retried (`Retry-After` as the least wait); any other status is
 * rejected, the reason naming it and the start of the body.
 */
export async function fromResponse(response) {
  const status = response.status;
  const after = retryAfterMs(response.headers.get("retry-after"));
  if (status >= 200 && status <= 299) return delivered();
  if (status === 429) return retry("answered 429 (throttled)", after ?? 0);
  if (status === 408 || status === 425 || (status >= 500 && status <= 599)) return retry(`answered ${status}`, after);
  let body = "";
  try {
    body = excerpt(await response.text());
  } catch {
    // The status alone says enough.
  }
  return reject(body ? `answered ${status}: ${body}` : `answered ${status}`);
}

function describeError(thrown) {
  if (thrown instanceof Error) {
    const cause = thrown.cause instanceof Error ? ` (${thrown.cause.message || thrown.cause.name})` : "";
    return `${thrown.name}: ${thrown.message}${cause}`;
  }
  return String(thrown);
}

/**
 * The outcome of a request: `fromResponse` for an answer; for no answer (a
 * thrown `TypeError: NetworkError`, which is also how a request to a host
 * the webhook's `allowed_hosts` does not list looks from inside the
 * sandbox), a retry naming the error.
 *
 *     return outcomeOf(fetch(url, { method: "POST", body }));
 */
export async function outcomeOf(pending) {
  let response;
  try {
    response = await (typeof pending === "function" ? pending() : pending);
  } catch (thrown) {
    return retry(`request failed: ${describeError(thrown)}`);
  }
  return fromResponse(response);
}

/**
 * Sends the batch untouched: the exact signed body with its Pusher and
 * Hookline headers (plus `headers`), POSTed to `url`; the receiver can
 * verify the signature as it would an HTTP webhook's.
 */
export function forward(url, request, headers = {}) {
  return outcomeOf(
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...request.headers, ...headers },
      body: request.body,
    }),
  );
}

function emit(level, parts) {
  const message = parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ");
  const log = globalThis.__hooklineLog;
  if (log) log(level, message);
  else console.error(`[${level}] ${message}`);
}

/** The host's log: `log.info("…")` (natively, standard error). */
export const log = {
  debug: (...parts) => emit("debug", parts),
  info: (...parts) => emit("info", parts),
  warn: (...parts) => emit("warn", parts),
  error: (...parts) => emit("error", parts),
};
