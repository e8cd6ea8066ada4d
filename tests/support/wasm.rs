//! WASM filters, compiled from source for wasm32-wasip2 in the test run.

use super::*;

/// Builds the example and fixture filters once per test process and returns
/// the directory holding the `.wasm` components.
pub fn wasm_filters() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let packages = [
                "drop-by-channel",
                "redact-client-data",
                "collapse-client-events",
                "hostile-filter",
                "uses-sockets",
            ];
            super::cargo_wasm::build_wasm_packages(Path::new(env!("CARGO_MANIFEST_DIR")), &packages)
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// The path of one built filter component (`drop_by_channel.wasm`).
pub fn wasm_filter(file: &str) -> PathBuf {
    let path = wasm_filters().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Builds a JavaScript filter project (its `node_modules` installed by
/// `scripts/setup-tests.sh`) with the SDK's build command and QuickJS, once
/// per test process; returns the component.
pub fn js_filter(project: &str) -> PathBuf {
    js_filter_on(project, "quickjs")
}

/// [`js_filter`] on an engine: `quickjs` or `starlingmonkey`.
pub fn js_filter_on(project: &str, engine: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(project);
    let sdk_bin = dir.join("node_modules/@hookline/filter/bin/hookline-filter-js.mjs");
    assert!(
        sdk_bin.is_file(),
        "{} is missing: scripts/setup-tests.sh installs the JavaScript filters' packages",
        sdk_bin.display()
    );
    let sdk_bin = sdk_bin.to_str().unwrap().to_string();
    sdk_built(
        project,
        engine,
        "node".as_ref(),
        &[&sdk_bin, "build", "filter.js", "--engine", engine],
    )
}

/// Builds a Python filter (`PROJECT/filter.py`) with the SDK's build command
/// from the test venv (`scripts/setup-tests.sh` installs `sdk/python`
/// there), once per test process; returns the component.
pub fn py_filter(project: &str) -> PathBuf {
    let build = super::peers::python().with_file_name("hookline-filter-py");
    assert!(
        build.is_file(),
        "{} is missing: scripts/setup-tests.sh installs sdk/python in the test venv",
        build.display()
    );
    sdk_built(project, "python", build.as_os_str(), &["build", "filter.py"])
}

/// Runs an SDK's build command (`PROGRAM ARGS -o OUT`) in `project`, once
/// per (project, variant) and test process; returns the component,
/// `target/wasm-sdk/NAME-VARIANT-PID.wasm`.
fn sdk_built(project: &str, variant: &str, program: &std::ffi::OsStr, args: &[&str]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, String), PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    let key = (project.to_string(), variant.to_string());
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(project);
    let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let out_dir = root.join("target/wasm-sdk");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}-{variant}-{}.wasm", std::process::id()));
    let output = Command::new(program)
        .current_dir(&dir)
        .args(args)
        .arg("-o")
        .arg(&out)
        // The daemon under test loads it; no separate check.
        .env("HOOKLINE_BIN", "")
        .output()
        .unwrap_or_else(|e| panic!("run {program:?}: {e}"));
    assert!(
        output.status.success(),
        "building {project} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert(key, out.clone());
    out
}
