// The example Lambda handler from soketi's "AWS Lambda trigger" page,
// completed: it verifies the batch's HMAC signature with the app secret from
// the environment, refuses anything tampered with, and logs
// `channel_occupied` events.
//
// Hookline invokes the function with
//   {"payload": {"time_ms": …, "events": […]},
//    "headers": {"X-Pusher-Key": …, "X-Pusher-Signature": …,
//                "X-Hookline-Batch-Id": …, "X-Hookline-Batch-Time": …, …}}
// and JSON.stringify(payload) is exactly the text that was signed.

const { createHmac, timingSafeEqual } = require("crypto");

exports.handler = async ({ payload, headers }) => {
  const secret = process.env.HOOKLINE_SECRET || process.env.SOKETI_SECRET;
  if (!secret) {
    throw new Error("set HOOKLINE_SECRET to the app secret");
  }
  const signature = headers && headers["X-Pusher-Signature"];
  const expected = createHmac("sha256", secret).update(JSON.stringify(payload)).digest("hex");
  // Compare in constant time; a wrong length is simply a mismatch.
  const valid =
    typeof signature === "string" &&
    signature.length === expected.length &&
    timingSafeEqual(Buffer.from(signature), Buffer.from(expected));
  if (!valid) {
    // The message was not sent by Hookline with this secret, or it was
    // tampered with: do not process it by any means.
    console.log("refused: invalid X-Pusher-Signature");
    return { statusCode: 401, body: "invalid signature" };
  }

  payload.events.forEach(({ name, channel }) => {
    if (name === "channel_occupied") {
      console.log(channel + " is now occupied.");
    }
  });
  return { statusCode: 200, body: "ok", batch: headers["X-Hookline-Batch-Id"] };
};
