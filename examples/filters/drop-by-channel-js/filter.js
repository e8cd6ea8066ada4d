// Drops events whose channel matches a pattern, or whose user is listed.
//
//   "filters": [{ "wasm": "filters/drop_by_channel_js.wasm",
//                 "config": { "channels": ["debug-*", "*-internal"], "user_ids": ["bot"] } }]
//
// Build: npm install && npm run build

import { retain } from "@hookline/filter";

const FIELDS = ["channels", "user_ids"];

/** The config, checked: refuses unknown fields and non-string patterns. */
function parse(config) {
  const given = config ?? {};
  if (typeof given !== "object" || Array.isArray(given)) throw "the config must be an object";
  for (const field of Object.keys(given)) {
    if (!FIELDS.includes(field)) throw `unknown field \`${field}\`, expected \`channels\` or \`user_ids\``;
  }
  const list = (field) => {
    const value = given[field] ?? [];
    if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
      throw `\`${field}\` must be a list of strings`;
    }
    return value;
  };
  return { channels: list("channels"), userIds: list("user_ids") };
}

export function validateConfig(config) {
  const { channels, userIds } = parse(config);
  if (channels.length === 0 && userIds.length === 0) {
    throw "set `channels` and/or `user_ids`, or this filter drops nothing";
  }
  const empty = channels.find((p) => p === "");
  if (empty !== undefined) throw 'channel pattern "" is empty';
}

export function filter(ctx, batch) {
  const { channels, userIds } = parse(ctx.config);
  return retain(
    batch,
    (event) => !channels.some((p) => globMatch(p, event.channel)) && !(event.userId !== null && userIds.includes(event.userId)),
  );
}

/** `*` matches any (possibly empty) run of characters; everything else is literal. */
export function globMatch(pattern, text) {
  const parts = pattern.split("*");
  if (parts.length === 1) return pattern === text;
  const first = parts[0];
  const last = parts[parts.length - 1];
  if (text.length < first.length + last.length || !text.startsWith(first) || !text.endsWith(last)) return false;
  let rest = text.slice(first.length, text.length - last.length);
  for (const middle of parts.slice(1, -1)) {
    const at = rest.indexOf(middle);
    if (at < 0) return false;
    rest = rest.slice(at + middle.length);
  }
  return true;
}
