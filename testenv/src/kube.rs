//! A real kube-apiserver + etcd, as controller-runtime's envtest runs them (no kubelet, and no
//! controller-manager unless a test starts one with only the controllers it needs: nothing runs
//! pods, and garbage collection does not happen).
//!
//! Binaries come from `$KUBEBUILDER_ASSETS` when it holds them, else from
//! `scripts/kube-assets.sh` (a cached build from the Go module proxy).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rcgen::{DnType, KeyPair};

use crate::pki::Ca;
use crate::process::{Guarded, free_port};
use crate::{repo_root, run_script};

/// Finds (or builds) the folder with `kube-apiserver`, `etcd` and `kubectl`.
pub fn kube_assets() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("KUBEBUILDER_ASSETS") {
        let dir = PathBuf::from(dir);
        if dir.join("kube-apiserver").exists() && dir.join("etcd").exists() {
            return Ok(dir);
        }
    }
    run_script(&repo_root().join("scripts/kube-assets.sh")).map(PathBuf::from)
}

/// Runs kube-controller-manager against this apiserver with only the given controllers (e.g.
/// `horizontalpodautoscaling`), built on first use by `scripts/kube-controller-manager.sh`. The
/// process stops when the returned guard drops.
pub fn start_controller_manager(server: &KubeApiServer, controllers: &[&str], extra: &[&str]) -> Result<Guarded> {
    let binary = run_script(&repo_root().join("scripts/kube-controller-manager.sh"))?;
    let log = server.dir.path().join(format!("kube-controller-manager-{}.log", free_port()));
    let mut command = Command::new(binary);
    command
        .arg(format!("--kubeconfig={}", server.kubeconfig_path().display()))
        .arg(format!("--controllers={}", controllers.join(",")))
        .arg("--leader-elect=false")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={}", free_port()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log)?);
    Guarded::spawn("kube-controller-manager", command).context("start kube-controller-manager")
}

/// A running apiserver with its etcd. Dropping it stops both and deletes their data.
#[derive(Debug)]
pub struct KubeApiServer {
    apiserver: Guarded,
    etcd: Guarded,
    dir: tempfile::TempDir,
    assets: PathBuf,
    port: u16,
}

impl KubeApiServer {
    pub fn start() -> Result<KubeApiServer> {
        let assets = kube_assets()?;
        let dir = tempfile::Builder::new().prefix("cgo-kube-").tempdir()?;
        let pki = dir.path().join("pki");
        fs::create_dir_all(&pki)?;
        write_pki(&pki)?;

        let etcd_port = free_port();
        let etcd_peer_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut etcd_cmd = Command::new(assets.join("etcd"));
        etcd_cmd
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer_port}"))
            .arg("--unsafe-no-fsync=true")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("etcd.log"))?);
        let etcd = Guarded::spawn("etcd", etcd_cmd).context("start etcd")?;

        let port = free_port();
        let mut apiserver_cmd = Command::new(assets.join("kube-apiserver"));
        apiserver_cmd
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--cert-dir={}", pki.display()))
            .arg(format!("--tls-cert-file={}", pki.join("serving.crt").display()))
            .arg(format!("--tls-private-key-file={}", pki.join("serving.key").display()))
            .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
            .arg(format!("--secure-port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-issuer=https://127.0.0.1:{port}/"))
            .arg(format!("--service-account-key-file={}", pki.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", pki.join("sa.key").display()))
            .arg(format!("--requestheader-client-ca-file={}", pki.join("front-proxy-ca.crt").display()))
            .arg("--requestheader-allowed-names=front-proxy-client")
            .arg("--requestheader-username-headers=X-Remote-User")
            .arg("--requestheader-group-headers=X-Remote-Group")
            .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
            .arg(format!("--proxy-client-cert-file={}", pki.join("front-proxy-client.crt").display()))
            .arg(format!("--proxy-client-key-file={}", pki.join("front-proxy-client.key").display()))
            .arg("--v=0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("kube-apiserver.log"))?);
        let apiserver = Guarded::spawn("kube-apiserver", apiserver_cmd).context("start kube-apiserver")?;

        let mut server = KubeApiServer { apiserver, etcd, dir, assets, port };
        fs::write(server.kubeconfig_path(), server.kubeconfig_yaml())?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the apiserver and etcd and deletes their folder, from a shared reference (at process
    /// exit).
    pub(crate) fn discard(&self) {
        self.apiserver.kill_now();
        self.etcd.kill_now();
        let _ = fs::remove_dir_all(self.dir.path());
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let probe = self.kubectl(&["get", "--raw=/readyz"]).output();
            if let Ok(out) = &probe
                && out.status.success()
            {
                return Ok(());
            }
            let exited = [("kube-apiserver", self.apiserver.exited()), ("etcd", self.etcd.exited())];
            if let Some((name, Some(status))) = exited.into_iter().find(|(_, s)| s.is_some()) {
                let log = fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
                bail!("{name} exited during start-up ({status}); log tail:\n{}", last_lines(&log, 30));
            }
            if Instant::now() > deadline {
                let log = fs::read_to_string(self.dir.path().join("kube-apiserver.log")).unwrap_or_default();
                let etcd_log = fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                bail!(
                    "kube-apiserver was not ready within 120s\n--- apiserver log tail\n{}\n--- etcd log tail\n{}",
                    last_lines(&log, 30),
                    last_lines(&etcd_log, 10)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The HTTPS address of the apiserver.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig file for the `admin` user (group `system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml_for(&self.url())
    }

    /// A kubeconfig of the `admin` user for this apiserver reached at `url` (a proxy in front of
    /// it, whose address its certificate also names: 127.0.0.1).
    pub fn kubeconfig_yaml_for(&self, url: &str) -> String {
        let pki = self.dir.path().join("pki");
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\n\
             contexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\n\
             current-context: envtest\n",
            url = url,
            ca = pki.join("ca.crt").display(),
            cert = pki.join("admin.crt").display(),
            key = pki.join("admin.key").display(),
        )
    }

    /// `kubectl` bound to this apiserver (the caller adds arguments and runs it).
    pub fn kubectl(&self, args: &[&str]) -> Command {
        let kubectl = self.assets.join("kubectl");
        let mut command = Command::new(if kubectl.exists() { kubectl } else { PathBuf::from("kubectl") });
        command.arg(format!("--kubeconfig={}", self.kubeconfig_path().display())).args(args);
        command
    }

    /// The folder with the binaries in use (`kube-apiserver`, `etcd`, `kubectl`).
    pub fn assets(&self) -> &Path {
        &self.assets
    }

    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.apiserver.pid(), self.etcd.pid())
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A CA, a serving certificate for 127.0.0.1, an `admin`/`system:masters` client certificate and
/// the service-account signing key.
fn write_pki(dir: &Path) -> Result<()> {
    let ca = Ca::new("cgo-testenv-ca")?;
    let serving = ca.server("kube-apiserver", &["127.0.0.1", "localhost"])?;
    let admin = ca.client(&[(DnType::CommonName, "admin"), (DnType::OrganizationName, "system:masters")])?;
    let sa_key = KeyPair::generate()?;
    // The aggregation layer: the apiserver proxies to extension API servers (the operator's
    // external metrics API) with this client certificate, from a CA of its own, as kubeadm sets
    // it up.
    let front_proxy_ca = Ca::new("cgo-testenv-front-proxy-ca")?;
    let front_proxy_client = front_proxy_ca.client(&[(DnType::CommonName, "front-proxy-client")])?;
    fs::write(dir.join("front-proxy-ca.crt"), front_proxy_ca.pem())?;
    fs::write(dir.join("front-proxy-client.crt"), front_proxy_client.certificate_pem)?;
    fs::write(dir.join("front-proxy-client.key"), front_proxy_client.key_pem)?;

    fs::write(dir.join("ca.crt"), ca.pem())?;
    fs::write(dir.join("serving.crt"), serving.certificate_pem)?;
    fs::write(dir.join("serving.key"), serving.key_pem)?;
    fs::write(dir.join("admin.crt"), admin.certificate_pem)?;
    fs::write(dir.join("admin.key"), admin.key_pem)?;
    fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
    fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
    Ok(())
}
