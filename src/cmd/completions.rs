//! `hookline completions SHELL`: the shell completion script, generated
//! from the command line itself so it never lags behind a new flag.

use std::process::ExitCode;

use anyhow::Result;
use clap_complete::Shell;

/// Flags of `hookline completions`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the completion script for `args.shell` to stdout.
pub(crate) fn run(args: Args, mut command: clap::Command) -> Result<ExitCode> {
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout().lock());
    Ok(ExitCode::SUCCESS)
}
