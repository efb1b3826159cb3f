//! Debian's promtool as an independent judge of a `/metrics` text, for
//! every test binary that serves metrics (a module of its own, so a test
//! binary can take it without the rig in common/mod.rs).

use std::path::Path;
use std::process::Command;

/// Writes `text` to `path` (kept for reading after a failure) and asserts
/// that `promtool check metrics` finds nothing to say about it.
pub fn promtool_check(text: &str, path: &Path) {
    std::fs::write(path, text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output()
        .expect("Debian's promtool is installed (make deps)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}");
}
