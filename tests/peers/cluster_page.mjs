// Reads the cluster section of Hookline's status page in Debian's headless
// Chromium (playwright-core), for tests/status_page.rs:
//
//   node cluster_page.mjs ADMIN_URL TOKEN NODES PARTITIONS SCREENSHOT_PATH
//
// Logs in, waits until the page (which refreshes itself) lists NODES nodes
// and every one of PARTITIONS partitions with an owner, then prints
// `CLUSTER {"shares": {node: count}, "owners": {partition: node}}` as the
// page shows them. Any console error, page error or failed request fails
// the run. Exit 0 only when it printed.

import { chromium } from "playwright-core";

const [adminUrl, token, nodes, partitions, screenshot] = process.argv.slice(2);
const PATIENCE_MS = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
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
    if (!request.failure()?.errorText.includes("ERR_ABORTED")) {
      problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
    }
  });
  await page.goto(adminUrl);
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForFunction(
    ([nodes, partitions]) =>
      document.querySelectorAll("#nodes tbody tr[data-node]").length === nodes &&
      document.querySelectorAll("#partitions li[data-owner]").length === partitions &&
      document.querySelectorAll("#partitions li.unowned").length === 0,
    [Number(nodes), Number(partitions)],
    { timeout: PATIENCE_MS },
  );
  const shown = await page.evaluate(() => {
    const shares = {};
    for (const row of document.querySelectorAll("#nodes tbody tr[data-node]")) {
      shares[row.dataset.node] = Number(row.querySelector("td.owned").textContent.trim());
    }
    const owners = {};
    for (const item of document.querySelectorAll("#partitions li[data-owner]")) {
      owners[item.dataset.partition] = item.dataset.owner;
    }
    return { shares, owners };
  });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`CLUSTER ${JSON.stringify(shown)}`);
} catch (error) {
  problems.push(`step failed: ${error.message}`);
} finally {
  await browser.close();
}
if (problems.length > 0) {
  console.log(`PROBLEMS ${JSON.stringify(problems)}`);
  process.exit(1);
}
