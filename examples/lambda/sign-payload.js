// Makes a signed invocation payload, as Hookline would send it, from a
// batch body, to try the handler locally:
//
//   HOOKLINE_SECRET=demo-secret node sign-payload.js \
//     '{"time_ms":1795722962259,"events":[{"name":"channel_vacated","channel":"room-1"}]}' > payload.json
//
// The body is signed as JSON.stringify(JSON.parse(body)), exactly the text
// Hookline signs and the handler checks. HOOKLINE_KEY sets X-Pusher-Key
// (default "demo-key").

const { createHmac, randomUUID } = require("crypto");

const secret = process.env.HOOKLINE_SECRET;
const body = process.argv[2];
if (!secret || !body) {
  console.error("usage: HOOKLINE_SECRET=<app secret> node sign-payload.js '<batch body JSON>'");
  process.exit(2);
}
const payload = JSON.parse(body);
const signed = JSON.stringify(payload);
const invocation = {
  payload,
  headers: {
    "X-Pusher-Key": process.env.HOOKLINE_KEY || "demo-key",
    "X-Pusher-Signature": createHmac("sha256", secret).update(signed).digest("hex"),
    "X-Hookline-Batch-Id": randomUUID(),
    "X-Hookline-Batch-Time": String(payload.time_ms),
  },
};
console.log(JSON.stringify(invocation, null, 2));
