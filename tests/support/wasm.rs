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

/// Builds a JavaScript filter project (its `node_modules` installed by
/// `scripts/setup-tests.sh`) with the SDK's build command and QuickJS, once
/// per test process; returns the component.
pub fn js_filter(project: &str) -> PathBuf {
    js_filter_on(project, "quickjs")
}

/// [`js_filter`] on an engine: `quickjs` or `starlingmonkey`.
pub fn js_filter_on(project: &str, engine: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(String, String), PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    if let Some(path) = built.get(&(project.to_string(), engine.to_string())) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(project);
    let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let out_dir = root.join("target/wasm-js");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}-{engine}-{}.wasm", std::process::id()));
    let sdk_bin = dir.join("node_modules/@hookline/filter/bin/hookline-filter-js.mjs");
    assert!(
        sdk_bin.is_file(),
        "{} is missing: scripts/setup-tests.sh installs the JavaScript filters' packages",
        sdk_bin.display()
    );
    let output = Command::new("node")
        .current_dir(&dir)
        .arg(&sdk_bin)
        .args(["build", "filter.js", "--engine", engine, "-o"])
        .arg(&out)
        // The daemon under test loads it; no separate check.
        .env("HOOKLINE_BIN", "")
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "building {project} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert((project.to_string(), engine.to_string()), out.clone());
    out
}

/// Builds a Python filter (`PROJECT/filter.py`) with the SDK's build command
/// from the test venv (`scripts/setup-tests.sh` installs `sdk/python`
/// there), once per test process; returns the component.
pub fn py_filter(project: &str) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    if let Some(path) = built.get(project) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(project);
    let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
    let out_dir = root.join("target/wasm-py");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(format!("{name}-{}.wasm", std::process::id()));
    let python = super::peers::python();
    let build = python.with_file_name("hookline-filter-py");
    assert!(
        build.is_file(),
        "{} is missing: scripts/setup-tests.sh installs sdk/python in the test venv",
        build.display()
    );
    let output = Command::new(&build)
        .current_dir(&dir)
        .args(["build", "filter.py", "-o"])
        .arg(&out)
        // The daemon under test loads it; no separate check.
        .env("HOOKLINE_BIN", "")
        .output()
        .expect("run hookline-filter-py");
    assert!(
        output.status.success(),
        "building {project} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    built.insert(project.to_string(), out.clone());
    out
}
