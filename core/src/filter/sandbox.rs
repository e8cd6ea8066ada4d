//! The sandbox a filter runs in: the `hookline:filter` bindings, the state
//! of one instance (a WASI context that grants nothing, one memory budget,
//! captured output, the log budget, the call's clock), the linker holding
//! exactly the allowed interfaces, and the check that names a refused
//! import.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{Component, HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::clock::{CallClock, CallClockData, CallClockView};
use super::limits::SandboxLimits;
use super::output::CapturedOutput;

/// Host bindings of the `hookline:filter` world (`sdk/wit/filter.wit`).
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit/filter.wit",
        world: "filter",
    });
}

pub(crate) use bindings::hookline::filter::types as wit;

/// The WIT package version this host implements.
pub(super) const WIT_PACKAGE: &str = "hookline:filter";
pub(super) const WIT_VERSION: &str = "0.1.0";
/// Interfaces a filter may import (by package), besides the world's `log`.
const ALLOWED_PACKAGES: &[&str] = &[
    "wasi:io/",
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    // Linked deny-all: every operation answers `access-denied` and no
    // socket is ever created (CPython and StarlingMonkey import it).
    "wasi:sockets/",
];
/// Lines a call may log, through the `log` import and its output together.
pub(crate) const LOG_LINES_PER_CALL: u32 = 100;
/// Longest log message kept from a filter.
pub(crate) const LOG_MESSAGE_CAP: usize = 4096;
/// WASI resources (pollables, streams…) an instance may hold at once.
const MAX_RESOURCES: usize = 4096;

/// Per-instance state: the WASI context (nothing granted) and limits.
pub(crate) struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: SandboxLimits,
    pub(super) stdout: CapturedOutput,
    pub(super) stderr: CapturedOutput,
    /// Where log lines come from.
    pub(super) label: Arc<str>,
    /// Log lines left in the current call.
    pub(super) log_budget: u32,
    /// The monotonic clock, whose sleeps end at the call's deadline.
    pub(super) clock: CallClock,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl HostState {
    /// The state of a new instance: a WASI context that grants nothing
    /// (stdout and stderr captured, `wasi:sockets` denied), `memory` bytes
    /// for all its memories and tables, and a clock for calls of `budget`.
    pub(super) fn new(label: Arc<str>, memory: usize, budget: Duration) -> Self {
        let (stdout, stderr) = (CapturedOutput::default(), CapturedOutput::default());
        // wasi:sockets is linked deny-all (see `sandbox_linker`).
        let wasi = deny_all_wasi(stdout.clone(), stderr.clone()).build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi,
            table,
            limits: SandboxLimits::new(memory),
            stdout,
            stderr,
            label,
            log_budget: 0,
            clock: CallClock::new(budget),
        }
    }

    /// Takes one line from the call's log budget; false once it is spent.
    pub(super) fn spend_log_line(&mut self) -> bool {
        let left = self.log_budget > 0;
        self.log_budget = self.log_budget.saturating_sub(1);
        left
    }
}

impl bindings::FilterImports for HostState {
    fn log(&mut self, level: wit::Level, message: String) {
        if !self.spend_log_line() {
            return;
        }
        let message = truncate(&message, LOG_MESSAGE_CAP);
        let filter = &*self.label;
        match level {
            wit::Level::Debug => tracing::debug!(filter, "{message}"),
            wit::Level::Info => tracing::info!(filter, "{message}"),
            wit::Level::Warn => tracing::warn!(filter, "{message}"),
            wit::Level::Error => tracing::error!(filter, "{message}"),
        }
    }
}

impl wit::Host for HostState {}

struct HasTable;
impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

struct HasState;
impl HasData for HasState {
    type Data<'a> = &'a mut HostState;
}

/// Refuses any import outside the sandbox's allowlist, naming it.
pub(super) fn check_imports(engine: &Engine, component: &Component) -> Result<(), String> {
    check_component_imports(
        engine,
        component,
        &ImportRules {
            allowed: ALLOWED_PACKAGES,
            package: WIT_PACKAGE,
            version: WIT_VERSION,
            sdk: "hookline-filter",
            what: "filters",
            allowed_text: "wasi:io, wasi:cli, wasi:clocks, wasi:random, wasi:filesystem with nothing opened, wasi:sockets with every operation denied, and the world's `log`",
        },
    )
}

/// What a kind of component may import.
pub(crate) struct ImportRules<'a> {
    /// Interface name prefixes allowed besides the world's `log`.
    pub allowed: &'a [&'a str],
    /// The world's own package and the version this host implements.
    pub package: &'a str,
    pub version: &'a str,
    /// The SDK to rebuild with, and the kind's plural, for messages.
    pub sdk: &'a str,
    pub what: &'a str,
    /// The allowlist in words.
    pub allowed_text: &'a str,
}

/// Refuses any import outside `rules`, naming it (and a world of another
/// version, naming both).
pub(crate) fn check_component_imports(
    engine: &Engine,
    component: &Component,
    rules: &ImportRules<'_>,
) -> Result<(), String> {
    for (name, _) in component.component_type().imports(engine) {
        if name == "log" || rules.allowed.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        if let Some(rest) = name.strip_prefix(rules.package) {
            let version = rest.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
            if version != rules.version {
                return Err(format!(
                    "was built against {}@{version}, but this Hookline provides {}@{}; rebuild it with a matching {} SDK",
                    rules.package, rules.package, rules.version, rules.sdk
                ));
            }
            continue;
        }
        return Err(format!(
            "imports `{name}`, which {} may not use (allowed: {})",
            rules.what, rules.allowed_text
        ));
    }
    Ok(())
}

/// A WASI context that grants nothing: no directory, no variable, no
/// argument, stdin closed, stdout and stderr captured, and `wasi:sockets`
/// answering `access-denied` before any socket exists.
pub(crate) fn deny_all_wasi(stdout: CapturedOutput, stderr: CapturedOutput) -> wasmtime_wasi::WasiCtxBuilder {
    let mut builder = wasmtime_wasi::WasiCtxBuilder::new();
    builder
        .stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder
}

/// The linker with exactly the granted WASI interfaces (not the all-in-one
/// `add_to_linker`): `wasi:sockets` is linked against a context that
/// allows no TCP, UDP or name lookup and no address, so a guest that
/// imports it (CPython does) loads, and every call answers
/// `access-denied` before any socket exists.
pub(super) fn sandbox_linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random, sockets, sync};
    use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
    let mut l = Linker::<HostState>::new(engine);
    io::error::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    sync::io::poll::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    sync::io::streams::add_to_linker::<HostState, HasTable>(&mut l, |s| &mut s.table)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(&mut l, HostState::clocks)?;
    // Not wasmtime-wasi's: a sleep there would outlast the call's deadline.
    clocks::monotonic_clock::add_to_linker::<HostState, CallClockData>(&mut l, |s| CallClockView {
        clock: &mut s.clock,
        table: &mut s.table,
    })?;
    random::random::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(&mut l, HostState::random)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(&mut l, HostState::cli)?;
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(&mut l, HostState::filesystem)?;
    sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(&mut l, HostState::filesystem)?;
    sockets::instance_network::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sockets::network::add_to_linker::<HostState, WasiSockets>(&mut l, &Default::default(), HostState::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::tcp::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::udp::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    sync::sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(&mut l, HostState::sockets)?;
    bindings::Filter::add_to_linker::<HostState, HasState>(&mut l, |s| s)?;
    Ok(l)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
