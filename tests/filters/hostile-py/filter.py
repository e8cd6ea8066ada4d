"""A test filter that misbehaves as its config's `mode` asks: `raise` (an
exception), `loop` (forever), `memory` (allocates without end),
`bad-verdict` (returns something else), `keep`."""

from hookline_filter import keep, log


def filter(ctx, batch):
    mode = (ctx.config or {}).get("mode", "keep")
    log.info("hostile-py mode", mode, "events", len(batch.events))
    if mode == "raise":
        raise RuntimeError("hostile-py raises on purpose")
    if mode == "loop":
        while True:
            pass
    if mode == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if mode == "bad-verdict":
        return "maybe"
    return keep()
