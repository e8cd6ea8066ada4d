//! `hookline dlq`: list, show, replay and purge dead letters, through the
//! running daemon's admin socket or, when none runs, on the store itself.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hookline_core::admin::{AdminRequest, AdminResponse, DeadLetterView, OfflineAdmin, Selector, ask_daemon};
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
        /// Only this app's.
        #[arg(long, value_name = "ID")]
        app: Option<String>,
    },
    /// Show one dead letter in full: attempt history and events.
    Show {
        /// Its id (from `dlq list`).
        id: String,
    },
    /// Send dead letters again to the webhook with the same id in the current config.
    Replay(Target),
    /// Forget dead letters.
    Purge(Target),
}

/// One dead letter, an app's, or all.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Target {
    /// A dead letter's id.
    id: Option<String>,
    /// Every dead letter of this app.
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

impl Target {
    fn selector(self) -> Selector {
        match (self.id, self.app) {
            (Some(id), _) => Selector::Id(id),
            (None, Some(app)) => Selector::App(app),
            (None, None) => Selector::All,
        }
    }
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    if let Some(url) = &args.url {
        let request = request_of(args.command);
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
    let request = request_of(args.command);
    let show = matches!(request, AdminRequest::Show { .. });
    let response = match ask_daemon(&settings.data_dir, &request).await? {
        Some(response) => response,
        None => on_the_store(&settings, request).await?,
    };
    finish(&response, args.json, show)
}

fn request_of(command: Command) -> AdminRequest {
    match command {
        Command::List { app } => AdminRequest::List { app },
        Command::Show { id } => AdminRequest::Show { id },
        Command::Replay(target) => AdminRequest::Replay {
            selector: target.selector(),
        },
        Command::Purge(target) => AdminRequest::Purge {
            selector: target.selector(),
        },
    }
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
    let replay = matches!(request, AdminRequest::Replay { .. });
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
