// A test filter that misbehaves as its config's `mode` asks: `throw` (an
// Error), `throw-value` (a plain object), `loop` (forever), `memory`
// (allocates without end), `bad-verdict` (returns something else), `keep`.

import { keep, log } from "@hookline/filter";

export function filter(ctx, batch) {
  const mode = ctx.config?.mode ?? "keep";
  log.info("hostile-js mode", mode, "events", batch.events.length);
  switch (mode) {
    case "throw":
      throw new Error("hostile-js throws on purpose");
    case "throw-value":
      throw { code: 42, why: "hostile-js throws an object" };
    case "loop":
      for (;;) {}
    case "memory": {
      const hoard = [];
      for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));
    }
    case "bad-verdict":
      return { tag: "maybe" };
    default:
      return keep();
  }
}
