//! The admin console in a real browser: the node:test files in
//! `console/test/` drive Debian's Chromium with Playwright against real
//! `sessiond serve --demo` processes of this build, with grpcurl and
//! sessiond's load generator as the other clients. Each file is one test
//! here; `.config/nextest.toml` runs them one at a time (one Chromium).

use std::path::{Path, PathBuf};
use std::process::Command;

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// The console's npm dependencies (Playwright, axe-core), installed from
/// the lock file when absent.
fn ensure_node_modules(dir: &Path) {
    if dir.join("node_modules/playwright-core").is_dir()
        && dir.join("node_modules/@axe-core/playwright").is_dir()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm (Node.js 20) is needed for the console's browser tests");
    assert!(status.success(), "npm ci in console/ failed");
}

fn browser_test(file: &str) {
    let dir = console_dir();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the console's browser tests need Chromium at {chromium} (Debian: apt-get install chromium; .ci/run installs it)"
    );
    ensure_node_modules(&dir);
    let out = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            &format!("test/{file}"),
        ])
        .current_dir(&dir)
        .env("SESSIOND_BIN", env!("CARGO_BIN_EXE_sessiond"))
        .env("SESSIOND_LOADGEN", env!("CARGO_BIN_EXE_sessiond-loadgen"))
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "console/test/{file} failed:\n{report}"
    );
}

#[test]
fn an_admin_signs_in_sees_sessions_and_ends_them_live() {
    browser_test("flows.test.mjs");
}

#[test]
fn every_view_passes_axe_and_every_action_works_from_the_keyboard() {
    browser_test("access.test.mjs");
}

#[test]
fn the_console_is_safe_by_construction_and_says_when_to_wait() {
    browser_test("security.test.mjs");
}
