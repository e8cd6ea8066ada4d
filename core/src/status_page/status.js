// Hookline status page: refreshes its live part every few seconds and
// sends the replay and purge buttons to the admin API. No inline script:
// the page's CSP allows only this file.
"use strict";

const REFRESH_MS = 2000;
// Failing first, then idle, then ok; the page's own order within each.
const HEALTH_RANK = { failing: 0, idle: 1, ok: 2 };

// Shows the webhook rows the filter box and the health filter select, in
// the page's order or failing first. Runs after every refresh.
function applyView() {
  const body = document.querySelector("#webhooks tbody");
  if (!body) return;
  const text = document.getElementById("webhook-filter").value.trim().toLowerCase();
  const health = document.getElementById("health-filter").value;
  const rows = Array.from(body.querySelectorAll("tr[data-webhook]"));
  let shown = 0;
  for (const row of rows) {
    const named =
      !text || row.dataset.app.toLowerCase().includes(text) || row.dataset.webhook.toLowerCase().includes(text);
    row.hidden = !(named && (!health || row.classList.contains(health)));
    if (!row.hidden) shown += 1;
  }
  if (document.getElementById("sort-health").checked) {
    const rank = (row) => HEALTH_RANK[row.className] ?? 3;
    rows.sort((x, y) => rank(x) - rank(y)).forEach((row) => body.appendChild(row));
  }
  document.getElementById("webhook-count").textContent = `${shown} of ${rows.length}`;
}

async function refresh() {
  try {
    const answer = await fetch("/", { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const live = page.getElementById("live");
    if (live) document.getElementById("live").replaceWith(live);
    applyView();
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (_) {
    // The daemon restarting: try again at the next tick.
  }
}

function flash(text, bad) {
  const line = document.getElementById("flash");
  line.textContent = text;
  line.className = bad ? "bad" : "ok";
}

async function act(button) {
  const question = button.dataset.confirm;
  if (question && !window.confirm(question)) return;
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.url, {
      method: button.dataset.action,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: button.dataset.body || undefined,
    });
    const result = await answer.json().catch(() => ({}));
    if (answer.ok) {
      flash(`${button.textContent.trim()}: ${(result.done || []).length} done`, false);
    } else {
      const why = result.error || (result.refused || []).join("; ") || answer.statusText;
      flash(`${button.textContent.trim()} failed: ${why}`, true);
    }
  } catch (error) {
    flash(`${button.textContent.trim()} failed: ${error}`, true);
  } finally {
    await refresh();
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});

const controls = document.getElementById("webhook-controls");
controls.addEventListener("input", applyView);
controls.addEventListener("submit", (event) => event.preventDefault());
applyView();
setInterval(refresh, REFRESH_MS);
