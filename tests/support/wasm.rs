//! WASM filters, compiled from source for wasm32-wasip2 in the test run.

use super::*;

// ---------------------------------------------------------------------------
// WASM filters, compiled from source for wasm32-wasip2 in the test run.

/// Builds the example and fixture filters once per test process and returns
/// the directory holding the `.wasm` components.
pub fn wasm_filters() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let target = root.join("target/wasm");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let output = Command::new(cargo)
                .current_dir(root)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
                .arg(&target)
                .args([
                    "-p",
                    "drop-by-channel",
                    "-p",
                    "redact-client-data",
                    "-p",
                    "collapse-client-events",
                ])
                .args(["-p", "hostile-filter", "-p", "uses-sockets"])
                .output()
                .expect("run cargo");
            assert!(
                output.status.success(),
                "building the filters for wasm32-wasip2 failed (scripts/setup-tests.sh installs the target):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target.join("wasm32-wasip2/release")
        })
        .clone()
}

/// The path of one built filter component (`drop_by_channel.wasm`).
pub fn wasm_filter(file: &str) -> PathBuf {
    let path = wasm_filters().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}
