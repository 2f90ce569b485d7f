//! The shared servers leave nothing behind: once a test process that started them exits, their
//! folders (broker logs, etcd data: hundreds of MB per test binary) are gone.

use std::process::Command;

const CHILD_OUTPUT: &str = "CGO_CLEANUP_CHILD_OUTPUT";

#[test]
fn shared_servers_are_stopped_and_their_folders_deleted_at_exit() {
    if let Ok(output) = std::env::var(CHILD_OUTPUT) {
        // The child: start the shared servers, say where they keep their data, and exit.
        let env = testenv::shared();
        let kube_dir = env.kube.kubeconfig_path().parent().expect("kubeconfig in a folder").to_path_buf();
        let folders = format!("{}\n{}\n", env.kafka.data_dir().display(), kube_dir.display());
        std::fs::write(output, folders).expect("write the folders");
        return;
    }
    let output = tempfile::NamedTempFile::new().expect("a temporary file");
    // Its output is captured: the child's own "test result" line must not count as another test.
    let child = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "shared_servers_are_stopped_and_their_folders_deleted_at_exit", "--test-threads", "1"])
        .env(CHILD_OUTPUT, output.path())
        .output()
        .expect("run the child test process");
    assert!(
        child.status.success(),
        "the child test process failed ({}):\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let folders = std::fs::read_to_string(output.path()).expect("the child wrote its folders");
    let folders: Vec<&str> = folders.lines().collect();
    assert_eq!(folders.len(), 2, "{folders:?}");
    for folder in folders {
        assert!(std::path::Path::new(folder).is_absolute(), "{folder}");
        assert!(!std::path::Path::new(folder).exists(), "{folder} was left behind");
    }
}
