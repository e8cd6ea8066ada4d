// Hookline status page: refreshes its live part every few seconds, sends
// the replay and purge buttons to the admin API, and shows a webhook's
// attempt log when its row is clicked. No inline script:
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
    await showAttempts();
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

// The attempts panel: the webhook whose row was clicked, until closed.
let attemptsOf = null;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// What the receiver answered: its headers and body, opened on a click.
function answerCell(row, attempt, open) {
  const td = row.insertCell();
  td.className = "answer";
  if (attempt.response_body === null && attempt.response_headers.length === 0) {
    td.textContent = "-";
    return;
  }
  const details = document.createElement("details");
  details.open = open;
  const summary = document.createElement("summary");
  const body = attempt.response_body || "";
  summary.textContent = body.length > 0 ? body.slice(0, 80) : "(empty body)";
  const headers = document.createElement("pre");
  headers.className = "response-headers";
  headers.textContent = attempt.response_headers.map(([name, value]) => `${name}: ${value}`).join("\n");
  const full = document.createElement("pre");
  full.className = "response-body";
  full.textContent = body + (attempt.response_body_truncated ? "\n… (cut at 4 KiB)" : "");
  details.append(summary, headers, full);
  td.append(details);
}

async function showAttempts() {
  if (!attemptsOf) return;
  const { app, webhook } = attemptsOf;
  const panel = document.getElementById("attempts");
  const note = document.getElementById("attempts-note");
  const url = `/api/v1/apps/${encodeURIComponent(app)}/webhooks/${encodeURIComponent(webhook)}/attempts?limit=50`;
  const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const result = await answer.json().catch(() => ({}));
  document.getElementById("attempts-of").textContent = `${app} / ${webhook}`;
  const body = panel.querySelector("tbody");
  // Answers opened stay open across refreshes.
  const opened = new Set(
    Array.from(body.querySelectorAll("details[open]"), (details) => details.closest("tr").dataset.seq),
  );
  body.replaceChildren();
  if (!answer.ok) {
    note.textContent = result.error || answer.statusText;
  } else {
    note.textContent = result.total === 0 ? "No attempts yet." : `Latest ${result.attempts.length} of ${result.total}.`;
    for (const attempt of result.attempts) {
      const row = body.insertRow();
      row.dataset.seq = String(attempt.seq);
      row.className = attempt.outcome;
      cell(row, new Date(attempt.at_ms).toISOString().replace("T", " ").slice(0, 23));
      cell(row, attempt.batch_id);
      cell(row, String(attempt.attempt));
      const why = attempt.status !== null ? String(attempt.status) : attempt.error_class || "";
      cell(row, attempt.outcome === "delivered" ? "delivered" : `failed ${why}`, "outcome");
      cell(row, `${attempt.latency_ms.toFixed(1)} ms`);
      answerCell(row, attempt, opened.has(row.dataset.seq));
    }
  }
  panel.hidden = false;
  panel.dataset.loads = String(Number(panel.dataset.loads || 0) + 1);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) {
    act(button);
    return;
  }
  if (event.target.closest("#attempts-close")) {
    attemptsOf = null;
    document.getElementById("attempts").hidden = true;
    return;
  }
  const row = event.target.closest("#webhooks tbody tr[data-webhook]");
  if (row) {
    attemptsOf = { app: row.dataset.app, webhook: row.dataset.webhook };
    document.querySelector("#attempts tbody").replaceChildren();
    showAttempts().catch((error) => flash(`Attempts: ${error}`, true));
  }
});

const controls = document.getElementById("webhook-controls");
controls.addEventListener("input", applyView);
controls.addEventListener("submit", (event) => event.preventDefault());
applyView();
setInterval(refresh, REFRESH_MS);
