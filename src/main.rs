//! The `hookline` command: the daemon and its companion tools.
//!
//! This binary only parses flags, reads the environment and the config
//! file, and calls into `hookline-core`; everything else lives there.

mod cmd;
mod settings;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc: the daemon allocates many small, short-lived buffers per event
/// (bodies, records, headers) across threads; glibc's malloc showed as a
/// sixth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands back to the OS what compiling a filter freed. wasmtime compiles on
/// rayon's global pool; mimalloc only reclaims a thread's freed pages when
/// that thread allocates again, which idle pool threads do not. On a cold
/// compile cache this took `examples/apps` from 46 to 33 MiB idle.
/// (wasmtime compiles in parallel by default; were it serial, the broadcast
/// would only start the pool for nothing.)
fn release_compiler_memory() {
    rayon::broadcast(|_| collect_this_thread());
    collect_this_thread();
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, which
/// `libmimalloc-sys` does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// How long freed pages stay resident before mimalloc returns them (its
/// default, in the mimalloc 3 that `libmimalloc-sys` builds, is 1 s). The
/// filter stage frees each batch's buffers on blocking threads, and the
/// pages of many batches were held at once: with the drop-by-channel
/// filter at 64 connections, peak RSS fell from 40–49 MiB to 32–34 MiB at
/// 1–3 ms, with no throughput change measurable in `load.py`
/// (BENCHMARKS.md, 2026-11-29).
const PURGE_DELAY_MS: std::ffi::c_long = 2;

/// Sets [`PURGE_DELAY_MS`], unless `MIMALLOC_PURGE_DELAY` chooses another.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` takes no pointers and only stores the
        // value; it runs before any thread but this one exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[allow(unsafe_code)]
fn collect_this_thread() {
    // SAFETY: `mi_collect` has no preconditions, takes no pointers, is
    // thread-safe and acts only on the calling thread's heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Delivers Pusher-protocol webhook events to HTTP endpoints and AWS Lambda,
/// batched, filtered, signed and retried.
#[derive(Debug, Parser)]
#[command(name = "hookline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(cmd::serve::Args),
    /// Load and validate every app file as `serve` would; exit non-zero on any problem.
    Check(cmd::check::Args),
    /// Publish one event through the native ingest, signed.
    Send(cmd::send::Args),
    /// Run a local webhook receiver that prints each delivery and checks its signature.
    Listen(cmd::listen::Args),
    /// List, show, replay and purge dead letters.
    Dlq(cmd::dlq::Args),
    /// Work with WASM filters.
    #[command(subcommand)]
    Filter(cmd::filter::Command),
    /// Work with WASM sink components.
    #[command(subcommand)]
    Sink(cmd::sink::Command),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::Args),
    /// Print the man page, or write every page (one per subcommand) with --out DIR.
    Man(cmd::man::Args),
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // These only print what the command line says; no runtime needed.
    let command = match cli.command {
        Command::Completions(args) => return finish(cmd::completions::run(args, Cli::command())),
        Command::Man(args) => return finish(cmd::man::run(args, Cli::command())),
        command => command,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Check(args) => cmd::check::run(args).await,
            Command::Send(args) => cmd::send::run(args).await,
            Command::Listen(args) => cmd::listen::run(args).await,
            Command::Filter(command) => cmd::filter::run(command).await,
            Command::Sink(command) => cmd::sink::run(command).await,
            Command::Dlq(args) => cmd::dlq::run(args).await,
            Command::Completions(_) | Command::Man(_) => unreachable!("handled before the runtime starts"),
        }
    });
    finish(result)
}

/// The exit code of a command's result, reporting a failure.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            cmd::report_fatal(&error);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins `MI_OPTION_PURGE_DELAY` to the option it means: the test binary
    /// never calls `tune_allocator`, so the option reads mimalloc 3's
    /// default purge delay, 1000 ms (the options beside it default to 1 and
    /// 0), or what `MIMALLOC_PURGE_DELAY` says.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_index_names_mimallocs_purge_delay() {
        let expected = std::env::var("MIMALLOC_PURGE_DELAY").map_or(1000, |v| v.parse().unwrap());
        // SAFETY: `mi_option_get` takes no pointers and only reads the option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            expected
        );
    }
}
