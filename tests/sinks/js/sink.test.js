// The sink's own tests, natively: node runs `deliver` against a local
// receiver with node's fetch (`node --test`).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Receiver, request, sign, withAllowedHosts } from "@hookline/sink/testing";
import { deliver, validateConfig } from "./sink.js";

let receiver;
before(async () => {
  receiver = await Receiver.start();
});
after(() => receiver.close());

test("forwards the signed body and headers untouched", async () => {
  const req = request({ config: { url: receiver.url("/fwd") }, secret: "s3cret" });
  assert.deepEqual(await deliver(req), { tag: "delivered" });
  const got = receiver.requests.at(-1);
  assert.equal(got.path, "/fwd");
  assert.equal(got.body, req.body);
  assert.equal(got.headers["x-pusher-signature"], sign("s3cret", got.body));
  assert.equal(got.headers["x-hookline-batch-id"], req.batchId);
});

test("posts the parsed events in events mode", async () => {
  const events = [{ name: "member_added", channel: "presence-a", user_id: "ann", color: "red" }];
  assert.deepEqual(await deliver(request({ config: { url: receiver.url("/ev"), mode: "events" }, events })), {
    tag: "delivered",
  });
  const sent = JSON.parse(receiver.requests.at(-1).body);
  assert.deepEqual(sent.events, [{ name: "member_added", channel: "presence-a", userId: "ann", extra: { color: "red" } }]);
});

test("answers map to outcomes", async () => {
  receiver.script({ status: 429, headers: { "retry-after": "3" } }, 503, { status: 400, body: "no such\nchannel" });
  const req = () => request({ config: { url: receiver.url("/x") } });
  assert.deepEqual(await deliver(req()), { tag: "retry", val: { reason: "answered 429 (throttled)", afterMs: 3000 } });
  assert.deepEqual(await deliver(req()), { tag: "retry", val: { reason: "answered 503", afterMs: undefined } });
  assert.deepEqual(await deliver(req()), { tag: "reject", val: "answered 400: no such channel" });
});

test("a host outside allowed_hosts is a retry naming NetworkError", async () => {
  const outcome = await withAllowedHosts([receiver.origin], () =>
    deliver(request({ config: { url: "http://127.0.0.1:9/elsewhere" } })),
  );
  assert.equal(outcome.tag, "retry");
  assert.match(outcome.val.reason, /TypeError: NetworkError/);
});

test("validateConfig names the field", () => {
  assert.match(validateConfig({}), /config\.url/);
  assert.match(validateConfig({ url: "http://x", mode: "yell" }), /config\.mode/);
  assert.equal(validateConfig({ url: "http://x" }), undefined);
});
