//! Real servers for the consumer-group-operator's tests and demo: an Apache Kafka broker (KRaft)
//! and a kube-apiserver with etcd, on free 127.0.0.1 ports, killed when their owner drops or the
//! process dies (see [`process`]).
//!
//! A Rust fixture rather than the kube-rs `envtest` crate: that crate builds Go bindings (it
//! needs Go and clang at `cargo build` time) and starts only the apiserver, while this one is
//! ~300 lines of plain process management that also runs Kafka the same way.

pub mod kafka;
pub mod kube;
mod pki;
pub mod process;
pub mod proxy;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

pub use kafka::Kafka;
pub use kube::KubeApiServer;

/// A serving certificate for `names` from a new CA: (CA PEM, certificate PEM, PKCS#8 key PEM), for
/// servers the test apiserver must trust (an APIService's caBundle).
pub fn serving_certificate(names: &[&str]) -> Result<(String, String, String)> {
    let ca = pki::Ca::new("cgo-testenv-serving-ca")?;
    let issued = ca.server(names.first().copied().unwrap_or("server"), names)?;
    Ok((ca.pem(), issued.certificate_pem, issued.key_pem))
}

/// The repository root (this crate lives in `testenv/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testenv has a parent").to_path_buf()
}

/// Runs one of the project's set-up scripts; its stdout's last line is the folder it prepared.
pub(crate) fn run_script(script: &Path) -> Result<String> {
    let out = Command::new("bash")
        .arg(script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(stdout.lines().last().unwrap_or_default().trim().to_string())
}

/// One broker and one apiserver shared by every test of a test binary; tests isolate themselves
/// with their own namespaces, topics and group ids. Tests that break a server start their own.
pub struct SharedEnv {
    pub kafka: Kafka,
    pub kube: KubeApiServer,
}

static ENV: OnceLock<SharedEnv> = OnceLock::new();

/// Starts the shared servers on first use (both at once), then returns them. A static is never
/// dropped, so they are stopped and their folders (hundreds of MB of broker and etcd data)
/// deleted when the process exits.
pub fn shared() -> &'static SharedEnv {
    ENV.get_or_init(|| {
        let kafka = std::thread::spawn(Kafka::start);
        let kube = KubeApiServer::start().expect("start kube-apiserver + etcd");
        let kafka = kafka.join().expect("kafka start thread").expect("start Kafka");
        // SAFETY: registers a plain `extern "C"` function; it runs once, at exit.
        unsafe {
            libc::atexit(discard_shared);
        }
        SharedEnv { kafka, kube }
    })
}

extern "C" fn discard_shared() {
    if let Some(env) = ENV.get() {
        env.kafka.discard();
        env.kube.discard();
    }
}

static KAFKA_ONLY: OnceLock<Kafka> = OnceLock::new();

/// A broker alone, shared by the tests of a binary that need no apiserver; stopped and deleted at
/// process exit like [`shared`].
pub fn shared_kafka() -> &'static Kafka {
    KAFKA_ONLY.get_or_init(|| {
        let kafka = Kafka::start().expect("start Kafka");
        // SAFETY: registers a plain `extern "C"` function; it runs once, at exit.
        unsafe {
            libc::atexit(discard_shared_kafka);
        }
        kafka
    })
}

extern "C" fn discard_shared_kafka() {
    if let Some(kafka) = KAFKA_ONLY.get() {
        kafka.discard();
    }
}

static SECURED_KAFKA: OnceLock<Kafka> = OnceLock::new();

/// A broker from [`Kafka::start_secured`] (TLS and SASL listeners besides PLAINTEXT), shared by
/// the tests of a binary like [`shared_kafka`] and stopped and deleted at process exit.
pub fn shared_secured_kafka() -> &'static Kafka {
    SECURED_KAFKA.get_or_init(|| {
        let kafka = Kafka::start_secured().expect("start Kafka with TLS and SASL listeners");
        // SAFETY: registers a plain `extern "C"` function; it runs once, at exit.
        unsafe {
            libc::atexit(discard_shared_secured_kafka);
        }
        kafka
    })
}

extern "C" fn discard_shared_secured_kafka() {
    if let Some(kafka) = SECURED_KAFKA.get() {
        kafka.discard();
    }
}

/// A name unique within this test process and across runs, for topics, groups and namespaces.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
