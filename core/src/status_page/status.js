// Hookline status page: refreshes its live part every few seconds and
// sends the replay and purge buttons to the admin API. No inline script:
// the page's CSP allows only this file.
"use strict";

const REFRESH_MS = 2000;

async function refresh() {
  try {
    const answer = await fetch("/", { credentials: "same-origin", cache: "no-store" });
    if (!answer.ok) return;
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const live = page.getElementById("live");
    if (live) document.getElementById("live").replaceWith(live);
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

setInterval(refresh, REFRESH_MS);
