//! The boundaries of the library's layout (README "Layout"), checked on its sources: one crate
//! keeps the build simple, so what a workspace split would make the compiler check is checked here.
//! - no controller imports another (shared pieces live at the crate root);
//! - only the plugin's binary uses the plugin, and the operator never does;
//! - Kafka's client crates are used only under `src/kafka/`.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The source's code lines, comments dropped (a comment may name anything).
fn code(path: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(number, line)| (number + 1, line.split("//").next().unwrap_or("").to_string()))
        .filter(|(_, line)| !line.trim().is_empty())
        .collect()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Lines of files under `src/` (but not under `inside`) that name one of `paths`.
fn uses_outside(inside: &[&str], paths: &[&str]) -> Vec<String> {
    let src = root().join("src");
    let mut found = Vec::new();
    for file in sources(&src) {
        let relative = file.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        if inside.iter().any(|prefix| relative.starts_with(prefix)) {
            continue;
        }
        for (number, line) in code(&file) {
            if paths.iter().any(|path| line.contains(path)) {
                found.push(format!("src/{relative}:{number}: {}", line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_controller_imports_another() {
    let controllers = root().join("src/controllers");
    let names: Vec<String> = std::fs::read_dir(&controllers)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert!(names.len() >= 3, "the controllers' folders: {names:?}");
    let mut crossings = Vec::new();
    for name in &names {
        for file in sources(&controllers.join(name)) {
            for (number, line) in code(&file) {
                for other in names.iter().filter(|other| *other != name) {
                    if line.contains(&format!("controllers::{other}"))
                        || line.contains(&format!("super::super::{other}"))
                    {
                        crossings.push(format!("{}:{number}: {}", file.display(), line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "a controller imports another; move the shared piece to the crate root:\n{}",
        crossings.join("\n")
    );
}

#[test]
fn only_the_plugin_s_binary_uses_the_plugin() {
    let found = uses_outside(&["plugin/", "bin/kubectl-consumergroup.rs", "lib.rs"], &["plugin::"]);
    assert!(found.is_empty(), "the operator must not depend on the kubectl plugin:\n{}", found.join("\n"));
}

#[test]
fn kafka_s_client_crates_are_used_only_in_src_kafka() {
    let found = uses_outside(&["kafka/"], &["rdkafka::", "kafka_protocol::"]);
    assert!(
        found.is_empty(),
        "Kafka access belongs in src/kafka/ (its cost model is written there):\n{}",
        found.join("\n")
    );
}
