//! Starts a real Kafka broker and kube-apiserver for `make demo` and keeps them until stopped.
//!
//! Writes `kubeconfig` and `env` (shell `export`s) into the folder given as first argument, then
//! `ready`, and waits for SIGINT/SIGTERM. The servers die with this process.

use std::fs;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    // Before any thread starts, so every thread inherits the mask and only `wait` below receives them.
    let signals = testenv::process::StopSignals::block();
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".demo".into()));
    fs::create_dir_all(&out)?;
    let _ = fs::remove_file(out.join("ready"));
    eprintln!("[cgo-env] starting Kafka and kube-apiserver + etcd ...");
    let kafka = std::thread::spawn(testenv::Kafka::start);
    let kube = testenv::KubeApiServer::start()?;
    let kafka = kafka.join().expect("kafka start thread")?;
    fs::write(out.join("kubeconfig"), kube.kubeconfig_yaml())?;
    fs::write(
        out.join("env"),
        format!(
            "export KUBECONFIG={kubeconfig}\nexport KAFKA_BOOTSTRAP_SERVERS={bootstrap}\nexport CGO_KUBECTL={kubectl}\nexport CGO_KAFKA_DATA={data}\n",
            kubeconfig = out.join("kubeconfig").canonicalize()?.display(),
            bootstrap = kafka.bootstrap_servers(),
            kubectl = kube.assets().join("kubectl").display(),
            data = kafka.data_dir().display(),
        ),
    )?;
    fs::write(out.join("ready"), "")?;
    eprintln!("[cgo-env] Kafka at {}, kube-apiserver at {}", kafka.bootstrap_servers(), kube.url());
    // Block until a signal arrives; the servers are killed when this process exits.
    signals.wait();
    eprintln!("[cgo-env] stopping");
    drop(kafka);
    drop(kube);
    let _ = fs::remove_file(out.join("ready"));
    Ok(())
}
