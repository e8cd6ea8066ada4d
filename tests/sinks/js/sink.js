// The JavaScript sink of tests/sink_js.rs. config: {"url": "...", "mode":
// "forward" (the signed body and headers untouched, the default) or
// "events" (the parsed events as JSON)}.
import { forward, log, outcomeOf } from "@hookline/sink";

export function validateConfig(config) {
  if (typeof config?.url !== "string") return "config.url must be a string: where to send the batch";
  if (config.mode !== undefined && !["forward", "events"].includes(config.mode)) {
    return `config.mode must be "forward" or "events", not ${JSON.stringify(config.mode)}`;
  }
}

export async function deliver(request) {
  const { url, mode = "forward" } = request.config;
  log.info(`sink-js: attempt ${request.attempt} of batch ${request.batchId} (${request.events.length} events) to ${url}`);
  if (mode === "forward") return forward(url, request);
  const events = request.events.map((e) => ({ name: e.name, channel: e.channel, userId: e.userId, extra: e.extra }));
  return outcomeOf(
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-batch-id": request.batchId },
      body: JSON.stringify({ app: request.appId, webhook: request.webhookId, attempt: request.attempt, events }),
    }),
  );
}
