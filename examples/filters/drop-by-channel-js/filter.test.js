// Runs natively: node --test
import assert from "node:assert/strict";
import { test } from "node:test";

import { filter, globMatch, validateConfig } from "./filter.js";

const event = (channel, userId = null) => ({ name: "channel_occupied", channel, userId });

test("drops matching channels and listed users, keeps the rest in order", () => {
  const ctx = { appId: "a", webhook: "w", config: { channels: ["debug-*"], user_ids: ["bot"] } };
  const batch = { timeMs: 1, events: [event("debug-1"), event("room"), event("lobby", "bot"), event("x")] };
  assert.deepEqual(filter(ctx, batch), { tag: "select", val: [1, 3] });
});

test("refuses an unknown field, naming it", () => {
  assert.throws(() => validateConfig({ chanels: ["x"] }), /unknown field `chanels`/);
  assert.throws(() => validateConfig({}), /drops nothing/);
});

test("globs", () => {
  assert.ok(globMatch("debug-*", "debug-1"));
  assert.ok(globMatch("*-internal", "a-internal"));
  assert.ok(!globMatch("a*b*c", "acb"));
});
