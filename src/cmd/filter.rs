//! `hookline filter run`: run a filter component on a batch from stdin, and
//! `hookline filter new`: start a filter project, for filter authors.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hookline_core::event::parse_ingest_body;
use hookline_core::event::render_body;
use hookline_core::filter::{FilterHost, FilterSpec, OnError};
use hookline_core::settings::FilterSettings;

/// `hookline filter …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Read a batch (`{"time_ms", "events"}`) on stdin, run the filter on it,
    /// and print the verdict and the resulting batch.
    Run(RunArgs),
    /// Start a filter project (a filter and its test) in a new directory.
    New(NewArgs),
}

/// Flags of `hookline filter new`.
#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The project directory to create; its name is the filter's.
    dir: PathBuf,
    /// The language.
    #[arg(long, value_enum)]
    lang: super::scaffold::Lang,
    /// The sdk/ directory of a Hookline checkout (default: HOOKLINE_SDK, or
    /// the checkout this binary was built in).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

/// Flags of `hookline filter run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The filter component (built for wasm32-wasip2).
    filter: PathBuf,
    /// The filter's config, as JSON.
    #[arg(long, default_value = "null")]
    config: String,
    /// The app id the filter sees.
    #[arg(long, default_value = "app")]
    app: String,
    /// The webhook id the filter sees.
    #[arg(long, default_value = "webhook")]
    webhook: String,
    /// CPU deadline per call.
    #[arg(long, default_value_t = FilterSettings::default().cpu_ms)]
    cpu_ms: u64,
    /// Memory cap.
    #[arg(long, default_value_t = FilterSettings::default().memory_mb)]
    memory_mb: u64,
}

pub(crate) async fn run(command: Command) -> Result<ExitCode> {
    let args = match command {
        Command::Run(args) => args,
        Command::New(args) => {
            let sdk = super::scaffold::find_sdk(args.sdk)?;
            let next = super::scaffold::scaffold(&args.dir, args.lang, &sdk)?;
            println!("created {}; next:\n{next}", args.dir.display());
            return Ok(ExitCode::SUCCESS);
        }
    };
    super::init_logging(hookline_core::settings::LogFormat::Text);
    let config: serde_json::Value = serde_json::from_str(&args.config).context("--config is not valid JSON")?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read the batch from stdin")?;
    let batch = parse_ingest_body(&input).map_err(|e| anyhow::anyhow!("the batch on stdin: {e}"))?;
    let time_ms = batch.time_ms.map_or(0, |t| t as u64);
    let host = FilterHost::new(FilterSettings::default(), None, None)?;
    let spec = FilterSpec {
        path: args.filter.clone(),
        config: config.to_string(),
        on_error: OnError::Skip,
        cpu_ms: args.cpu_ms,
        memory_mb: args.memory_mb,
    };
    let (app, webhook) = (args.app, args.webhook);
    let result = tokio::task::spawn_blocking(move || {
        let filter = host.load(spec, &app, &webhook)?;
        let (decision, replaced) = filter.call_verbose(&app, &webhook, time_ms, &batch.events)?;
        let delivered = decision.apply(batch.events, replaced);
        Ok::<_, hookline_core::filter::FilterError>((decision, delivered))
    })
    .await?;
    match result {
        Ok((decision, events)) => {
            println!("verdict: {decision}");
            if let Some(events) = events {
                let joined: Vec<&str> = events.iter().map(|e| &*e.json).collect();
                println!("{}", render_body(time_ms, &joined.join(",")));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => bail!("{error}"),
    }
}
