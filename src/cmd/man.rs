//! `hookline man`: man pages generated from the command line, so they
//! say exactly what `--help` says.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

/// Flags of `hookline man`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Write hookline.1 and one page per subcommand (hookline-serve.1, …)
    /// into this directory, created if missing, instead of printing
    /// hookline.1 to stdout.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Prints hookline.1, or writes every page into `--out`.
pub(crate) fn run(args: Args, command: clap::Command) -> Result<ExitCode> {
    match args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {} (--out DIR)", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write the man pages into {} (--out DIR)", dir.display()))?;
            println!("wrote the man pages to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
