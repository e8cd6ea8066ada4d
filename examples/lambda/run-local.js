// Runs the handler locally on one invocation payload, exactly as Lambda
// would hand it over (the Invoke payload bytes, parsed as JSON):
//
//   HOOKLINE_SECRET=demo-secret node examples/lambda/run-local.js < payload.json
//
// Prints the handler's result as JSON on the last line; exits 0 when the
// handler accepted the payload (statusCode 200) and 1 otherwise.

const { handler } = require("./index.js");

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const result = await handler(JSON.parse(input));
  console.log(JSON.stringify(result));
  process.exit(result.statusCode === 200 ? 0 : 1);
});
