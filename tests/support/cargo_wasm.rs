//! Builds the repository's filter crates for wasm32-wasip2. Shared by the
//! end-to-end tests (`tests/support/wasm.rs`) and the benchmarks
//! (`core/benches/hot_paths.rs` includes this file), so both build the
//! same way into the same target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` (release, wasm32-wasip2) of the workspace at `root`
/// into `root/target/wasm`; returns the directory holding the components.
/// The error carries cargo's output.
pub(crate) fn build_wasm_packages(root: &Path, packages: &[&str]) -> Result<PathBuf, String> {
    let target = root.join("target/wasm");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target);
    for package in packages {
        command.args(["-p", package]);
    }
    let output = command.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building {} for wasm32-wasip2 failed (scripts/setup-tests.sh installs the target):\n{}",
            packages.join(", "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(target.join("wasm32-wasip2/release"))
}
