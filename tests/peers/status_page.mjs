// Drives Hookline's status page in Debian's headless Chromium (through
// playwright-core, which never downloads a browser), step by step with the
// Rust test (tests/status_page.rs) that owns the daemon and the receiver:
//
//   node status_page.mjs ADMIN_URL TOKEN SCREENSHOT_PATH
//
// It prints `STEP <name>` when the page shows what the step waits for, and
// waits for a line on stdin before steps that need the test to act first.
// Any console error, page error or failed request of the page's own fails
// the run. Exit 0 only when every step was seen.

import { chromium } from "playwright-core";
import readline from "node:readline";

const [adminUrl, token, screenshot] = process.argv.slice(2);
const PATIENCE_MS = 20000;
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function step(name) {
  console.log(`STEP ${name}`);
}

async function goAhead() {
  const { value, done } = await lines.next();
  if (done || value.trim() !== "go") throw new Error(`expected "go" from the test, got ${value}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(PATIENCE_MS);
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    // A refresh cut short by navigation is not the page's fault.
    if (!request.failure()?.errorText.includes("ERR_ABORTED")) {
      problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    }
  });
  // Confirmations (bulk actions, purge) are accepted.
  page.on("dialog", (dialog) => dialog.accept());

  // Log in with the token.
  await page.goto(adminUrl);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#webhooks");
  step("logged-in");

  // A script's way in: the token as a bearer header on every request
  // (the page load and the page's own refreshes), no form.
  const scripted = await browser.newContext({ extraHTTPHeaders: { Authorization: `Bearer ${token}` } });
  const direct = await scripted.newPage();
  direct.setDefaultTimeout(PATIENCE_MS);
  await direct.goto(adminUrl);
  await direct.waitForSelector("#webhooks");
  if ((await direct.locator("#token").count()) !== 0) throw new Error("the bearer token got the login form");
  await scripted.close();
  step("bearer");

  // The webhook has delivered: ok.
  const row = page.locator('#webhooks tr[data-app="a"]');
  await row.locator(".badge.ok").waitFor();
  step("ok");

  // The test takes the receiver down and sends an event: failing, by
  // itself (the page refreshes).
  await row.locator(".badge.failing").waitFor();
  step("failing");

  // The test waits for the dead letter and brings the receiver back.
  await goAhead();
  const letter = page.locator('#dead-letters tr[data-id][data-app="a"]').first();
  await letter.waitFor();
  // Each webhook row: app, id, kind, target; each dead letter: app, webhook.
  const webhooks = await page.$$eval("#webhooks tbody tr[data-webhook]", (rows) =>
    rows.map((row) => [
      row.dataset.app,
      row.querySelector("td.webhook-id")?.textContent.trim() ?? "",
      row.querySelector("td.target .kind")?.textContent.trim() ?? "",
      row.querySelector("td.target")?.getAttribute("title") ?? "",
      row.querySelector("td.in-flight .rate-limit")?.textContent.trim() ?? "",
    ]),
  );
  const letters = await page.$$eval("#dead-letters tbody tr[data-id]", (rows) =>
    rows.map((row) => [row.dataset.app, row.querySelector("td.webhook-id")?.textContent.trim() ?? ""]),
  );
  console.log(`TABLES ${JSON.stringify({ webhooks, letters })}`);
  // The filter box, the health filter and "failing first" hold across the
  // page's refreshes.
  const visible = () =>
    page.$$eval("#webhooks tbody tr[data-webhook]", (rows) =>
      rows.filter((row) => !row.hidden).map((row) => [row.dataset.webhook, row.className]),
    );
  const refreshed = async () => {
    const before = Number((await page.locator("body").getAttribute("data-refreshes")) || 0);
    await page.waitForFunction((n) => Number(document.body.dataset.refreshes || 0) > n, before);
  };
  await page.fill("#webhook-filter", "audit");
  const byName = await visible();
  await refreshed();
  const byNameAfterRefresh = await visible();
  await page.fill("#webhook-filter", "");
  await page.selectOption("#health-filter", "failing");
  await refreshed();
  const failing = await visible();
  await page.selectOption("#health-filter", "");
  await page.check("#sort-health");
  await refreshed();
  const sorted = await visible();
  const count = await page.locator("#webhook-count").textContent();
  await page.uncheck("#sort-health");
  console.log(`FILTERS ${JSON.stringify({ byName, byNameAfterRefresh, failing, sorted, count })}`);
  // A webhook row opens its attempts: app b's second webhook answered 400
  // with a body, which the panel shows (and still after a refresh).
  await page.locator('#webhooks tbody tr[data-app="b"][data-webhook$="#2"] td.webhook-id').click();
  const attempt = page.locator("#attempts tbody tr.failed").first();
  await attempt.waitFor();
  await attempt.locator("summary").click();
  const loads = Number(await page.locator("#attempts").getAttribute("data-loads"));
  await page.waitForFunction((n) => Number(document.getElementById("attempts").dataset.loads) > n, loads);
  const shownAttempt = await page.locator("#attempts tbody tr.failed").first().evaluate((row) => ({
    of: document.getElementById("attempts-of").textContent,
    outcome: row.querySelector("td.outcome").textContent,
    headers: row.querySelector("pre.response-headers").textContent,
    body: row.querySelector("pre.response-body").textContent,
    open: row.querySelector("details").open,
  }));
  console.log(`ATTEMPTS ${JSON.stringify(shownAttempt)}`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-attempts.png"), fullPage: true });
  await page.click("#attempts-close");
  const id = await letter.getAttribute("data-id");
  console.log(`LETTER ${id}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  await letter.locator("button.replay").click();
  await page.locator("#flash.ok").waitFor();
  // App `b`'s letter stays; app `a`'s is gone.
  await page.locator('#dead-letters tr[data-app="a"]').waitFor({ state: "detached" });
  await row.locator(".badge.ok").waitFor();
  step("replayed");
} catch (error) {
  problems.push(`step failed: ${error.message}`);
} finally {
  await browser.close();
}
if (problems.length > 0) {
  console.log(`PROBLEMS ${JSON.stringify(problems)}`);
  process.exit(1);
}
console.log("DONE");
// stdin (the test's pipe) would keep the process alive.
process.exit(0);
