// Helpers for Hookline filters written in JavaScript. The build command
// (`hookline-filter-js build`) wraps the filter module so the host sees the
// WIT world `hookline:filter/filter`; see README.md.

/** Deliver the batch unchanged. */
export function keep() {
  return { tag: "keep" };
}

/** Deliver nothing; the reason is logged and counted. */
export function drop(reason) {
  return { tag: "drop", val: String(reason ?? "") };
}

/** Deliver only the events at these distinct indices, in this order. */
export function select(indices) {
  return { tag: "select", val: Array.from(indices, Number) };
}

/** Deliver these events instead (each at least `name` and `channel`). */
export function replace(events, timeMs) {
  return { tag: "replace", val: { events: Array.from(events), timeMs } };
}

/**
 * Keeps the events for which `keep(event, index)` is true: `keep()` if that
 * is all of them, `drop()` if none, `select()` otherwise. Kept events are
 * delivered byte for byte as they arrived.
 */
export function retain(batch, keepIt) {
  const kept = [];
  batch.events.forEach((event, i) => {
    if (keepIt(event, i)) kept.push(i);
  });
  if (kept.length === batch.events.length) return keep();
  if (kept.length === 0) return drop("no event kept");
  return select(kept);
}

function emit(level, parts) {
  const message = parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" ");
  globalThis.__hooklineLog(level, message);
}

/** The host's log, the same on every engine: `log.info("…")`. */
export const log = {
  debug: (...parts) => emit("debug", parts),
  info: (...parts) => emit("info", parts),
  warn: (...parts) => emit("warn", parts),
  error: (...parts) => emit("error", parts),
};
