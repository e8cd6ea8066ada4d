//! `hookline dlq`: list, show, replay and purge dead letters, through the
//! running daemon's admin socket or, when none runs, on the store itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hookline_core::admin::{
    AdminRequest, AdminResponse, DeadLetterView, LetterFilter, OfflineAdmin, Selector, ask_daemon,
};
use hookline_core::store::DurableStore;

use crate::settings::{FlagOverrides, load};

mod api;

/// Flags shared by every `hookline dlq` command.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The daemon's data directory. Default ./hookline-data.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Directory of app files (replays without a running daemon check the
    /// webhook is still configured). Default ./apps.
    #[arg(long = "apps", value_name = "DIR", global = true)]
    apps: Option<PathBuf>,
    /// Daemon settings file (TOML).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Use a daemon's admin API (e.g. http://host:7079) instead of the
    /// local admin socket or store.
    #[arg(long, value_name = "URL", env = "HOOKLINE_ADMIN_URL", global = true)]
    url: Option<String>,
    /// The admin token for --url (better passed as HOOKLINE_ADMIN_TOKEN,
    /// which other users cannot read in the process list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HOOKLINE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List dead letters: id, app, webhook, events, attempts, last status, age, reason.
    List {
        #[command(flatten)]
        filter: Filter,
    },
    /// Show one dead letter in full: attempt history and events.
    Show {
        /// Its id (from `dlq list`).
        id: String,
    },
    /// Send dead letters again to the webhook with the same id in the current config.
    Replay {
        #[command(flatten)]
        target: Target,
        /// At most this many letters a second (each one's first attempt is
        /// spaced from the one before); default: all at once.
        #[arg(long, value_name = "PER_SECOND")]
        rate: Option<f64>,
    },
    /// Forget dead letters.
    Purge {
        #[command(flatten)]
        target: Target,
    },
}

/// Which dead letters: every condition given must hold.
#[derive(Debug, Default, clap::Args)]
struct Filter {
    /// Only this app's.
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// Only this webhook's (its id as `dlq list` shows it, or as configured).
    #[arg(long, value_name = "ID")]
    webhook: Option<String>,
    /// Only those whose reason contains this (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Only those whose last answer was in this class: 4xx, 5xx, an exact
    /// status such as 429, or `none` (no answer).
    #[arg(long, value_name = "CLASS")]
    status: Option<String>,
    /// Only those dead-lettered since then: a time ago (90s, 15m, 2h, 7d),
    /// a UTC time (2026-12-07T10:00:00Z) or ms since the Unix epoch.
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    since: Option<u64>,
    /// Only those dead-lettered before then (as --since).
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    until: Option<u64>,
}

impl Filter {
    fn letter_filter(self) -> LetterFilter {
        LetterFilter {
            app: self.app,
            webhook: self.webhook,
            reason: self.reason,
            status: self.status,
            since_ms: self.since,
            until_ms: self.until,
        }
    }
}

/// One dead letter by id, or those that pass the filters (`--all`: every
/// one, when no filter is given).
#[derive(Debug, clap::Args)]
struct Target {
    /// A dead letter's id.
    #[arg(conflicts_with_all = ["all", "app", "webhook", "reason", "status", "since", "until"])]
    id: Option<String>,
    /// Every dead letter (or, with filters, every one that passes them).
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: Filter,
    /// Print what would be touched, and touch nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Target {
    /// The selector and filter; refuses a target that names nothing.
    fn selected(self) -> Result<(Selector, LetterFilter, bool)> {
        let filter = self.filter.letter_filter();
        match self.id {
            Some(id) => Ok((Selector::Id(id), filter, self.dry_run)),
            None if self.all || !filter.is_empty() => Ok((Selector::All, filter, self.dry_run)),
            None => bail!(
                "name a dead letter's id, filters (--app, --webhook, --reason, --status, --since, --until), or --all"
            ),
        }
    }
}

/// `--since`/`--until`: ms since the Unix epoch.
fn parse_when(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let now = hookline_core::store::now_ms();
    if let Some((digits, unit)) = text
        .find(|c: char| !c.is_ascii_digit())
        .filter(|&i| i > 0)
        .map(|i| text.split_at(i))
    {
        let ms_per = match unit {
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            _ => None,
        };
        if let (Some(ms_per), Ok(n)) = (ms_per, digits.parse::<u64>()) {
            return Ok(now.saturating_sub(n.saturating_mul(ms_per)));
        }
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    utc_ms(text).ok_or_else(|| {
        format!("{text:?} is not a time: write a time ago (90s, 15m, 2h, 7d), a UTC time (2026-12-07T10:00:00Z) or ms since the Unix epoch")
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` as ms since the Unix epoch.
fn utc_ms(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + min) * 60 + sec)
        .ok()
        .map(|s| s * 1000)
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    if let Some(url) = &args.url {
        let request = request_of(args.command)?;
        let show = matches!(request, AdminRequest::Show { .. });
        let response = api::ask(url, args.token.as_deref(), &request).await?;
        return finish(&response, args.json, show);
    }
    let flags = FlagOverrides {
        apps_dir: args.apps,
        data_dir: args.data_dir,
        ..FlagOverrides::default()
    };
    let loaded = load(args.config.as_deref(), &flags)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let settings = loaded.settings;
    let request = request_of(args.command)?;
    let show = matches!(request, AdminRequest::Show { .. });
    let response = match ask_daemon(&settings.data_dir, &request).await? {
        Some(response) => response,
        None => on_the_store(&settings, request).await?,
    };
    finish(&response, args.json, show)
}

fn request_of(command: Command) -> Result<AdminRequest> {
    Ok(match command {
        Command::List { filter } => AdminRequest::List {
            filter: filter.letter_filter(),
        },
        Command::Show { id } => AdminRequest::Show { id },
        Command::Replay { target, rate } => {
            let (selector, filter, dry_run) = target.selected()?;
            AdminRequest::Replay {
                selector,
                filter,
                dry_run,
                rate,
            }
        }
        Command::Purge { target } => {
            let (selector, filter, dry_run) = target.selected()?;
            AdminRequest::Purge {
                selector,
                filter,
                dry_run,
            }
        }
    })
}

/// Prints the answer; fails when the request or any part of it did.
fn finish(response: &AdminResponse, json: bool, show: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(response)?);
    } else {
        print_text(response, show);
    }
    let failed = response.error.is_some() || !response.refused.is_empty();
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// No daemon runs: open the store (and, for replays, the apps) directly.
async fn on_the_store(settings: &hookline_core::settings::Settings, request: AdminRequest) -> Result<AdminResponse> {
    let store = if settings.store.backend == hookline_core::settings::StoreBackend::Redis {
        super::open_store(settings).await?
    } else {
        let store_file = settings.data_dir.join(hookline_core::store::STORE_FILE);
        if !store_file.exists() {
            bail!(
                "no store at {} and no daemon answering there: is --data-dir right?",
                store_file.display()
            );
        }
        let wait_for_disk = true;
        // Only dead letters are read; pending deliveries' events can stay on disk.
        let store: hookline_core::store::SharedStore = DurableStore::open(&settings.data_dir, wait_for_disk, 0)
            .map_err(|e| anyhow::anyhow!("{}", e.0))
            .context("no daemon answered on the admin socket, so the store was opened directly")?;
        store
    };
    let replay = matches!(request, AdminRequest::Replay { dry_run: false, .. });
    let admin = OfflineAdmin::new(
        settings,
        super::sink_registry(settings)?,
        super::process_env(),
        store,
        replay,
    )?;
    if replay {
        if let Some(problem) = super::missing_apps_dir(&settings.apps_dir) {
            bail!(
                "no daemon answered on the admin socket in {}, so the replay is checked against the app files, \
                 to send each letter to a webhook that is still configured: {problem}",
                super::absolute(&settings.data_dir).display()
            );
        }
        let report = admin.load_apps().await?;
        for failure in &report.failures {
            eprintln!("warning: {failure}");
        }
    }
    Ok(admin.handle(request).await)
}

fn print_text(response: &AdminResponse, show: bool) {
    if let Some(error) = &response.error {
        eprintln!("error: {error}");
        return;
    }
    if response.dry_run {
        print_table(&response.letters);
        println!(
            "{} dead letters would be touched (a dry run: nothing was)",
            response.letters.len()
        );
        return;
    }
    if show {
        response.letters.iter().for_each(print_letter);
    } else if !response.letters.is_empty() || (response.done.is_empty() && response.refused.is_empty()) {
        print_table(&response.letters);
    }
    for id in &response.done {
        println!("{id}");
    }
    if !response.done.is_empty() {
        let what = if response.queued_for_next_start {
            "queued in the store; the daemon sends them when it starts"
        } else {
            "done"
        };
        println!("{} dead letters: {what}", response.done.len());
    }
    for refusal in &response.refused {
        eprintln!("error: {refusal}");
    }
}

fn print_table(letters: &[DeadLetterView]) {
    if letters.is_empty() {
        println!("no dead letters");
        return;
    }
    println!("ID\tAPP\tWEBHOOK\tEVENTS\tATTEMPTS\tLAST STATUS\tAGE\tREASON");
    for l in letters {
        let status = l.last_status.map_or("-".to_string(), |s| s.to_string());
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            l.id,
            l.app_id,
            l.webhook_id,
            l.events,
            l.attempts,
            status,
            age(l.dead_at_ms),
            l.reason
        );
    }
}

fn print_letter(l: &DeadLetterView) {
    println!("id:          {}", l.id);
    println!("app:         {}", l.app_id);
    println!("webhook:     {}", l.webhook_id);
    println!("events:      {}", l.events);
    println!("attempts:    {}", l.attempts);
    println!(
        "last status: {}",
        l.last_status.map_or("none (no answer)".to_string(), |s| s.to_string())
    );
    println!("reason:      {}", l.reason);
    println!("formed:      {} ms since epoch", l.batch_time_ms);
    println!("died:        {} ms since epoch ({})", l.dead_at_ms, age(l.dead_at_ms));
    println!("history:");
    for a in &l.history {
        let status = a.status.map_or("-".to_string(), |s| s.to_string());
        println!("  {}  status {status}  {}", a.at_ms, a.error);
    }
    let pretty = serde_json::from_str::<serde_json::Value>(&l.events_json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| l.events_json.clone());
    println!("events:\n{pretty}");
}

fn age(at_ms: u64) -> String {
    let secs = hookline_core::store::now_ms().saturating_sub(at_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_ago_utc_or_epoch_ms() {
        assert_eq!(utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(utc_ms("2026-12-07T10:00:00Z"), Some(1_796_637_600_000));
        assert_eq!(utc_ms("2024-02-29T23:59:59Z"), Some(1_709_251_199_000));
        assert_eq!(parse_when("1700000000000"), Ok(1_700_000_000_000));
        let hour_ago = parse_when("1h").unwrap();
        let now = hookline_core::store::now_ms();
        assert!((now - hour_ago).abs_diff(3_600_000) < 5_000);
        assert!(parse_when("yesterday").unwrap_err().contains("not a time"));
        assert!(parse_when("5w").is_err());
    }
}
