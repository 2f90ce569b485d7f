//! Starts a real Kafka broker and kube-apiserver for `make demo` and keeps them until stopped.
//!
//! Writes `kubeconfig` and `env` (shell `export`s) into the folder given as first argument, then
//! `ready`, and waits for SIGINT/SIGTERM. The servers die with this process.

use std::fs;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    // Block SIGINT/SIGTERM before any thread starts so that every thread inherits the mask and
    // only the `sigwait` below receives them.
    // SAFETY: sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
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
    let mut signal = 0;
    // SAFETY: waits on the set blocked above.
    unsafe {
        libc::sigwait(&set, &mut signal);
    }
    eprintln!("[cgo-env] stopping");
    drop(kafka);
    drop(kube);
    let _ = fs::remove_file(out.join("ready"));
    Ok(())
}
