//! The status page at `/` of the admin listener: HTML rendered here, one
//! stylesheet and one script served beside it, nothing from elsewhere (it
//! works offline, under a CSP that allows only its own files).
//!
//! The script re-fetches the page every few seconds and swaps its live
//! part in, and sends the replay and purge buttons to the API. Nothing on
//! the page comes from a secret: webhooks show as their redacted ids and
//! targets, like the logs. A webhook shows its id (unique within its app,
//! the one its dead letters show), its kind and its target.

use std::fmt::Write;

use crate::activity::Circuit;
use crate::admin_http::{AppView, LetterPage, StatusView, WebhookView};
use crate::store::Ownership;

/// The page's stylesheet.
pub(crate) const CSS: &str = include_str!("status_page/status.css");
/// The page's script.
pub(crate) const JS: &str = include_str!("status_page/status.js");

/// The page asking for the admin token.
pub(crate) fn login(problem: Option<&str>) -> String {
    let mut page = head("Hookline — log in");
    page.push_str("<main class=\"login\"><h1>Hookline</h1>");
    if let Some(problem) = problem {
        let _ = write!(page, "<p class=\"error\" id=\"login-error\">{}</p>", escape(problem));
    }
    page.push_str(
        "<form method=\"post\" action=\"/login\"><label>Admin token \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required autofocus></label> \
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token is <code>admin.token</code> in the daemon's settings.</p></main></body></html>",
    );
    page
}

/// The whole page.
pub(crate) fn render(status: &StatusView, apps: &[AppView], letters: Result<LetterPage, String>) -> String {
    let mut page = head(&format!("Hookline — {}", status.node_id));
    page.push_str("<header><h1>Hookline</h1><p id=\"flash\" role=\"status\"></p></header>");
    // Outside the part that refreshes: what is typed here stays.
    page.push_str(
        "<form id=\"webhook-controls\" role=\"search\"><label>Webhooks: <input id=\"webhook-filter\" type=\"search\" \
         placeholder=\"app or webhook\" autocomplete=\"off\"></label> <label>health <select id=\"health-filter\">\
         <option value=\"\">any</option><option value=\"failing\">failing</option><option value=\"idle\">idle</option>\
         <option value=\"ok\">ok</option></select></label> <label><input id=\"sort-health\" type=\"checkbox\"> \
         failing first</label> <output id=\"webhook-count\"></output></form>",
    );
    // A webhook row opens its attempt log here (filled by the script from
    // the API, so a receiver's answer only ever lands in text nodes).
    page.push_str(
        "<section id=\"attempts\" hidden><h2>Attempts of <code id=\"attempts-of\"></code> \
         <button type=\"button\" id=\"attempts-close\">Close</button></h2><p id=\"attempts-note\"></p>\
         <table><thead><tr><th>When</th><th>Batch</th><th>Attempt</th><th>Outcome</th><th>Latency</th>\
         <th>Answer</th></tr></thead><tbody></tbody></table></section><main id=\"live\">",
    );
    summary(&mut page, status);
    cluster(&mut page, &status.store.ownership);
    webhooks(&mut page, apps);
    dead_letters(&mut page, letters);
    page.push_str("</main><script src=\"/assets/status.js\"></script></body></html>");
    page
}

/// `1 event`, `2 events`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/assets/status.css\"></head><body>",
        escape(title)
    )
}

fn summary(page: &mut String, s: &StatusView) {
    let ready = if s.ready { ("ok", "ready") } else { ("bad", "not ready") };
    let store = if s.store.health == "ok" { "ok" } else { "bad" };
    let _ = write!(
        page,
        "<section id=\"summary\"><dl>\
         <div><dt>Node</dt><dd id=\"node\">{node}</dd></div>\
         <div><dt>Version</dt><dd>{version}</dd></div>\
         <div><dt>Up</dt><dd>{uptime}</dd></div>\
         <div><dt>State</dt><dd class=\"{ready_class}\" id=\"ready\">{ready_text}</dd></div>\
         <div><dt>Config</dt><dd>generation {generation}, {apps}, {hooks}{reload}</dd></div>\
         <div><dt>Store</dt><dd class=\"{store}\">{backend}: {health}</dd></div>\
         <div><dt>Backlog</dt><dd>{backlog} in {pending}{oldest}{cluster}</dd></div>\
         <div><dt>Dead letters</dt><dd id=\"dead-letter-count\">{dead}</dd></div>\
         <div><dt>Ingested</dt><dd>{in_m} last minute, {in_h} last hour</dd></div>\
         <div><dt>Delivered</dt><dd>{ok_m} last minute, {ok_h} last hour; {bad_m} last minute</dd></div>\
         </dl>",
        node = escape(&s.node_id),
        version = escape(s.version),
        uptime = duration(s.uptime_s * 1000),
        ready_class = ready.0,
        ready_text = ready.1,
        generation = s.generation,
        apps = counted(s.apps as u64, "app", "apps"),
        hooks = counted(s.webhooks as u64, "webhook", "webhooks"),
        reload = s
            .last_reload
            .as_ref()
            .map(|r| format!("; last reload {} ({})", ago(r.at_ms), r.result))
            .unwrap_or_default(),
        backend = escape(&s.store.backend),
        health = escape(&s.store.health),
        backlog = bytes(s.store.backlog_bytes),
        cluster = s
            .store
            .ownership
            .cluster_backlog_bytes
            .map(|b| format!("; {} in the cluster", bytes(b)))
            .unwrap_or_default(),
        pending = counted(s.store.pending_deliveries as u64, "delivery", "deliveries"),
        oldest = s
            .store
            .oldest_pending_age_ms
            .map(|a| format!(", oldest {}", duration(a)))
            .unwrap_or_default(),
        dead = s.store.dead_letters,
        in_m = counted(s.ingested_events.last_minute, "event", "events"),
        in_h = s.ingested_events.last_hour,
        ok_m = counted(s.delivered_batches.last_minute, "batch", "batches"),
        ok_h = s.delivered_batches.last_hour,
        bad_m = counted(s.failed_attempts.last_minute, "failed attempt", "failed attempts"),
    );
    if !s.compiling.is_empty() {
        page.push_str("<p id=\"compiling\">Still compiling (their apps' batches wait): ");
        for (i, file) in s.compiling.iter().enumerate() {
            let _ = write!(page, "{}<code>{}</code>", if i > 0 { ", " } else { "" }, escape(file));
        }
        page.push_str("</p>");
    }
    if !s.file_errors.is_empty() {
        page.push_str("<ul class=\"file-errors\">");
        for error in &s.file_errors {
            let _ = write!(page, "<li class=\"bad\">{}</li>", escape(error));
        }
        page.push_str("</ul>");
    }
    page.push_str("</section>");
}

/// A shared store's nodes: each one's share of the partitions and its
/// backlog, and every partition's owner (nothing on the embedded store).
/// A node's colour is its place among the nodes (CSS classes, as the page's
/// CSP allows no inline style).
fn cluster(page: &mut String, ownership: &Ownership) {
    if ownership.nodes.is_empty() {
        return;
    }
    let _ = write!(
        page,
        "<section id=\"cluster\"><h2>Cluster</h2><table id=\"nodes\"><thead><tr><th>Node</th>\
         <th>Partitions</th><th>Fair share</th><th>Backlog</th></tr></thead><tbody>"
    );
    let live = ownership.nodes.len() as u32;
    let (least, most) = (ownership.partitions / live, ownership.partitions.div_ceil(live));
    let mut owner_of: Vec<Option<usize>> = vec![None; ownership.partitions as usize];
    for (i, (name, share)) in ownership.nodes.iter().enumerate() {
        for &partition in &share.owned {
            if let Some(owner) = owner_of.get_mut(partition as usize) {
                *owner = Some(i);
            }
        }
        let count = share.owned.len() as u32;
        let fair = if (least..=most).contains(&count) { "ok" } else { "bad" };
        let _ = write!(
            page,
            "<tr data-node=\"{name}\"><td><span class=\"swatch node-{colour}\"></span> <code>{name}</code>{this}</td>\
             <td class=\"owned\" title=\"{list}\">{count}</td><td class=\"{fair}\">{least}–{most}</td><td>{backlog}</td></tr>",
            name = escape(name),
            colour = i % 8,
            this = if *name == ownership.node {
                " <small>(this node)</small>"
            } else {
                ""
            },
            list = share.owned.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            backlog = bytes(share.backlog_bytes),
        );
    }
    page.push_str("</tbody></table><p>Every partition and its owner:</p><ol id=\"partitions\" start=\"0\">");
    let names: Vec<&String> = ownership.nodes.keys().collect();
    for (partition, owner) in owner_of.iter().enumerate() {
        match owner {
            Some(i) => {
                let _ = write!(
                    page,
                    "<li class=\"partition node-{colour}\" data-partition=\"{partition}\" data-owner=\"{name}\" \
                     title=\"partition {partition}: {name}\">{partition}</li>",
                    colour = i % 8,
                    name = escape(names[*i]),
                );
            }
            None => {
                let _ = write!(
                    page,
                    "<li class=\"partition unowned\" data-partition=\"{partition}\" data-owner=\"\" \
                     title=\"partition {partition}: no owner (moving)\">{partition}</li>"
                );
            }
        }
    }
    page.push_str("</ol></section>");
}

/// `ok`, `failing` or `idle`, and why.
fn health(w: &WebhookView) -> (&'static str, String) {
    let last_ok = w.activity.last_success_ms.unwrap_or(0);
    match &w.activity.last_error {
        _ if w.activity.circuit != Circuit::Closed => (
            "failing",
            format!("circuit {}", w.activity.circuit.name().replace('_', "-")),
        ),
        Some(error) if error.at_ms >= last_ok => {
            let status = error.status.map(|s| format!("{s}: ")).unwrap_or_default();
            ("failing", format!("{status}{}", error.reason))
        }
        _ if w.activity.last_success_ms.is_some() => ("ok", format!("delivered {}", ago(last_ok))),
        _ => ("idle", "nothing delivered yet".to_string()),
    }
}

fn webhooks(page: &mut String, apps: &[AppView]) {
    page.push_str(
        "<section><h2>Webhooks</h2><table id=\"webhooks\"><thead><tr><th>App</th><th>Webhook</th><th>Target</th>\
         <th>Health</th><th>Circuit</th><th>Pending</th><th>Oldest</th><th>In flight</th>\
         <th>Delivered 1m / 1h</th><th>Failed 1m / 1h</th><th>Last hour</th></tr></thead><tbody>",
    );
    let mut any = false;
    for app in apps {
        for w in &app.webhooks {
            any = true;
            let (state, why) = health(w);
            let _ = write!(
                page,
                "<tr data-app=\"{app_id}\" data-webhook=\"{id}\" class=\"{state}\" title=\"Show its attempts\">\
                 <td>{app_id}</td><td class=\"webhook-id\"><code>{id}</code></td>\
                 <td class=\"target\" title=\"{target}\"><span class=\"kind\">{kind}</span> {target}</td>\
                 <td class=\"health\"><span class=\"badge {state}\">{state}</span> <small>{why}</small></td>\
                 <td class=\"circuit\">{circuit}</td><td class=\"pending\">{pending}</td><td>{oldest}</td>\
                 <td class=\"in-flight\">{in_flight}{limit}</td><td>{ok_m} / {ok_h}</td><td>{bad_m} / {bad_h}</td><td>{spark}</td></tr>",
                app_id = escape(&app.id),
                id = escape(&w.id),
                kind = escape(w.kind),
                target = escape(&w.target),
                why = escape(&why),
                circuit = w.activity.circuit.name(),
                pending = w.pending,
                oldest = w.oldest_pending_age_ms.map(duration).unwrap_or_else(|| "-".into()),
                in_flight = w.activity.in_flight,
                limit = rate_limit(w),
                ok_m = w.activity.delivered.last_minute,
                ok_h = w.activity.delivered.last_hour,
                bad_m = w.activity.failed.last_minute,
                bad_h = w.activity.failed.last_hour,
                spark = sparkline(&w.activity.delivered_per_minute, &w.activity.failed_per_minute),
            );
        }
    }
    if !any {
        page.push_str("<tr><td colspan=\"11\">No webhooks: add an app file to the apps directory.</td></tr>");
    }
    page.push_str("</tbody></table></section>");
}

/// A webhook's `rate_limit` under its attempts in flight, and whether the
/// next attempt waits for a token now.
fn rate_limit(w: &WebhookView) -> String {
    let Some(limit) = w.rate_limit else {
        return String::new();
    };
    let waiting = if w.activity.rate_limited {
        " <span class=\"badge limited\">limited</span>"
    } else {
        ""
    };
    format!(
        "<br><small class=\"rate-limit\" title=\"rate_limit: {per_second}/s, burst {burst}; {waits} deliveries waited for a token\">≤ {per_second}/s</small>{waiting}",
        per_second = limit.per_second,
        burst = limit.burst,
        waits = w.activity.rate_limit_waits,
    )
}

/// Deliveries (up) and failures (down) per minute over the last hour, as
/// an inline SVG (no script, no external image).
fn sparkline(delivered: &[u32], failed: &[u32]) -> String {
    let peak = delivered.iter().chain(failed).copied().max().unwrap_or(0).max(1) as f64;
    let mut svg = String::from(
        "<svg class=\"spark\" viewBox=\"0 0 120 24\" width=\"120\" height=\"24\" role=\"img\" \
         aria-label=\"deliveries and failures per minute, last hour\">",
    );
    for (i, (&ok, &bad)) in delivered.iter().zip(failed).enumerate() {
        let x = i * 2;
        if ok > 0 {
            let h = (f64::from(ok) / peak * 11.0).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"ok\" x=\"{x}\" y=\"{:.1}\" width=\"2\" height=\"{h:.1}\"/>",
                12.0 - h
            );
        }
        if bad > 0 {
            let h = (f64::from(bad) / peak * 11.0).max(1.0);
            let _ = write!(
                svg,
                "<rect class=\"bad\" x=\"{x}\" y=\"12\" width=\"2\" height=\"{h:.1}\"/>"
            );
        }
    }
    svg.push_str("<line x1=\"0\" y1=\"12\" x2=\"120\" y2=\"12\"/></svg>");
    svg
}

fn dead_letters(page: &mut String, letters: Result<LetterPage, String>) {
    page.push_str("<section><h2>Dead letters</h2>");
    let letters = match letters {
        Ok(letters) => letters,
        Err(error) => {
            let _ = write!(
                page,
                "<p class=\"bad\">Cannot read the dead letters: {}</p></section>",
                escape(&error)
            );
            return;
        }
    };
    if letters.dead_letters.is_empty() {
        page.push_str("<p id=\"no-dead-letters\">None.</p></section>");
        return;
    }
    let _ = write!(
        page,
        "<p>{total} in all{shown}. \
         <button data-action=\"POST\" data-url=\"/api/v1/dead-letters/replay\" data-body='{{\"all\":true}}' \
         data-confirm=\"Replay all {total} dead letters?\" id=\"replay-all\">Replay all</button> \
         <button class=\"danger\" data-action=\"POST\" data-url=\"/api/v1/dead-letters/purge\" data-body='{{\"all\":true}}' \
         data-confirm=\"Purge all {total} dead letters? They cannot be brought back.\" id=\"purge-all\">Purge all</button></p>",
        total = letters.total,
        shown = if letters.next.is_some() {
            format!(
                " (the oldest {} shown; the API pages through the rest)",
                letters.dead_letters.len()
            )
        } else {
            String::new()
        },
    );
    page.push_str(
        "<table id=\"dead-letters\"><thead><tr><th>Id</th><th>App</th><th>Webhook</th><th>Events</th>\
         <th>Attempts</th><th>Last status</th><th>Died</th><th>Reason</th><th></th></tr></thead><tbody>",
    );
    for letter in &letters.dead_letters {
        let id = escape(&letter.id);
        let _ = write!(
            page,
            "<tr data-id=\"{id}\" data-app=\"{app}\" data-webhook=\"{webhook}\"><td><code>{id}</code></td><td>{app}</td>\
             <td class=\"webhook-id\"><code>{webhook}</code></td><td>{events}</td>\
             <td>{attempts}</td><td>{status}</td><td>{died}</td><td>{reason}</td>\
             <td><button data-action=\"POST\" data-url=\"/api/v1/dead-letters/{id}/replay\" class=\"replay\">Replay</button> \
             <button data-action=\"DELETE\" data-url=\"/api/v1/dead-letters/{id}\" class=\"purge danger\" \
             data-confirm=\"Purge dead letter {id}?\">Purge</button></td></tr>",
            app = escape(&letter.app_id),
            webhook = escape(&letter.webhook_id),
            events = letter.events,
            attempts = letter.attempts,
            status = letter.last_status.map_or("-".to_string(), |s| s.to_string()),
            died = ago(letter.dead_at_ms),
            reason = escape(&letter.reason),
        );
    }
    page.push_str("</tbody></table></section>");
}

/// Text made safe for HTML content and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ago(at_ms: u64) -> String {
    format!("{} ago", duration(crate::delivery::now_ms().saturating_sub(at_ms)))
}

fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_app_files_cannot_open_markup() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn the_cluster_section_names_every_partitions_owner_and_flags_an_unfair_share() {
        use crate::store::NodeShare;
        let share = |owned: Vec<u32>| NodeShare {
            owned,
            backlog_bytes: 2048,
        };
        let ownership = Ownership {
            backend: "redis",
            node: "b".to_string(),
            partitions: 4,
            owned: vec![2],
            lag: Default::default(),
            takeovers: Default::default(),
            members: vec!["a".to_string(), "b".to_string()],
            handovers: Default::default(),
            nodes: [
                ("a".to_string(), share(vec![0, 1, 3])),
                ("b".to_string(), share(vec![2])),
            ]
            .into(),
            cluster_backlog_bytes: Some(4096),
        };
        let mut page = String::new();
        cluster(&mut page, &ownership);
        for (partition, owner) in [(0, "a"), (1, "a"), (2, "b"), (3, "a")] {
            assert!(
                page.contains(&format!("data-partition=\"{partition}\" data-owner=\"{owner}\"")),
                "{page}"
            );
        }
        // 3 and 1 of 4 over two nodes: both outside 2–2.
        assert_eq!(page.matches("<td class=\"bad\">2–2</td>").count(), 2, "{page}");
        assert!(page.contains("<code>b</code> <small>(this node)</small>"), "{page}");

        let mut moving = ownership.clone();
        moving.nodes.get_mut("a").unwrap().owned = vec![0, 1];
        let mut page = String::new();
        cluster(&mut page, &moving);
        assert!(
            page.contains("class=\"partition unowned\" data-partition=\"3\""),
            "{page}"
        );

        let mut page = String::new();
        cluster(
            &mut page,
            &Ownership {
                nodes: Default::default(),
                ..ownership
            },
        );
        assert!(page.is_empty(), "the embedded store has no cluster section");
    }

    #[test]
    fn the_sparkline_draws_deliveries_up_and_failures_down() {
        let mut ok = vec![0; 60];
        let mut bad = vec![0; 60];
        ok[59] = 4;
        bad[58] = 2;
        let svg = sparkline(&ok, &bad);
        assert!(
            svg.contains("<rect class=\"ok\" x=\"118\" y=\"1.0\" width=\"2\" height=\"11.0\"/>"),
            "{svg}"
        );
        assert!(
            svg.contains("<rect class=\"bad\" x=\"116\" y=\"12\" width=\"2\" height=\"5.5\"/>"),
            "{svg}"
        );
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
