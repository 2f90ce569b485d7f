//! A real single-node Apache Kafka (KRaft, combined broker + controller) run from jars, with a
//! PLAINTEXT listener, and with TLS and SASL listeners too when started by
//! [`Kafka::start_secured`]; or several brokers in one cluster ([`Kafka::start_cluster`]).
//!
//! The jars come from `scripts/kafka-libs.sh` (`$KAFKA_HOME/libs`, the cache, or Maven Central),
//! unless `CGO_KAFKA_LIBS` already names the folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pki::Ca;
use crate::process::{Guarded, free_port};
use crate::{repo_root, run_script};

const STARTED_LINE: &str = "Kafka Server started";

/// Preloaded into every broker: fsync and fdatasync return at once. A broker's data is deleted
/// with it, and a new partition costs 4 fsyncs: with each fsync 20 ms slower, 2,200 new
/// partitions took 117 s to answer ListOffsets, so tests waiting for new topics depended on how
/// busy the disk was (see `native/nosync.c`; etcd runs with `--unsafe-no-fsync` likewise).
const NOSYNC_LIBRARY: &str = env!("CGO_NOSYNC_LIBRARY");

/// The Kafka release of a folder of jars, from its `kafka_2.13-<version>.jar`.
pub fn kafka_version(libs: &Path) -> Option<String> {
    fs::read_dir(libs).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let version = name.strip_prefix("kafka_2.13-")?.strip_suffix(".jar")?;
        (!version.contains('-')).then(|| version.to_string())
    })
}

/// Finds (or fetches) the folder of Kafka jars.
pub fn kafka_libs() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("CGO_KAFKA_LIBS") {
        return Ok(PathBuf::from(dir));
    }
    run_script(&repo_root().join("scripts/kafka-libs.sh")).map(PathBuf::from)
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// A running broker. Dropping it kills the broker and deletes its data.
#[derive(Debug)]
pub struct Kafka {
    process: Option<Guarded>,
    dir: tempfile::TempDir,
    libs: PathBuf,
    port: u16,
    secured: Option<SecuredListeners>,
}

/// One node of a cluster: node 1 hosts the KRaft controller, which every node names.
struct Node {
    id: usize,
    controller_port: u16,
    hosts_controller: bool,
    cluster_id: String,
}

/// The user the SASL listeners know, for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
pub const SASL_USER: &str = "alice";

/// How long a SASL session lasts on the `REAUTH` listener (its `connections.max.reauth.ms`,
/// KIP-368): the broker closes a connection whose session ended at its next request.
pub const REAUTH_SESSION: Duration = Duration::from_secs(3);

/// The TLS and SASL listeners of a broker from [`Kafka::start_secured`], and what their clients
/// need. Inter-broker and controller traffic stays on PLAINTEXT listeners.
#[derive(Debug)]
pub struct SecuredListeners {
    ssl_port: u16,
    mtls_port: u16,
    sasl_port: u16,
    reauth_port: u16,
    pki: PathBuf,
    password: String,
}

impl SecuredListeners {
    /// `SSL`: TLS with a broker certificate for 127.0.0.1 and localhost, signed by
    /// [`SecuredListeners::ca_pem_path`]; no client certificate asked.
    pub fn ssl_bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.ssl_port)
    }

    /// `MTLS`: TLS that requires a client certificate signed by the CA (such as
    /// [`SecuredListeners::client_certificate_path`]). Its broker certificate names localhost
    /// only, no IP address, and it advertises itself as `localhost`.
    pub fn mtls_bootstrap_servers(&self) -> String {
        format!("localhost:{}", self.mtls_port)
    }

    /// The `MTLS` listener by IP address, which its certificate does not name.
    pub fn mtls_bootstrap_servers_by_ip(&self) -> String {
        format!("127.0.0.1:{}", self.mtls_port)
    }

    /// `SASL_PLAINTEXT`: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for [`SecuredListeners::sasl_user`].
    pub fn sasl_bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.sasl_port)
    }

    /// `REAUTH`: SASL_PLAINTEXT with SCRAM-SHA-256 only, whose sessions last [`REAUTH_SESSION`].
    pub fn reauth_bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.reauth_port)
    }

    /// The CA that signed the broker's and the client's certificates (PEM).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.pki.join("ca.pem")
    }

    /// A CA that signed nothing of this broker's (PEM).
    pub fn untrusted_ca_pem_path(&self) -> PathBuf {
        self.pki.join("untrusted-ca.pem")
    }

    /// A client certificate the `MTLS` listener accepts (PEM), and its key (PKCS#8 PEM).
    pub fn client_certificate_path(&self) -> PathBuf {
        self.pki.join("client.pem")
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.pki.join("client.key")
    }

    /// [`SASL_USER`] and its password (random per broker).
    pub fn sasl_user(&self) -> (&str, &str) {
        (SASL_USER, &self.password)
    }
}

/// What the secured listeners add to server.properties: entries of `listeners`,
/// `advertised.listeners` and `listener.security.protocol.map` (each starting with a comma), and
/// their own settings (whole lines).
#[derive(Default)]
struct Listeners {
    listeners: String,
    advertised: String,
    protocols: String,
    settings: String,
}

impl SecuredListeners {
    /// Writes the CA, the certificates and keys under `pki`, and returns the broker's settings.
    fn configure(&self) -> Result<Listeners> {
        fs::create_dir_all(&self.pki)?;
        let ca = Ca::new("cgo-kafka-ca")?;
        let broker = ca.server("cgo-kafka", &["127.0.0.1", "localhost"])?;
        let localhost_only = ca.server("cgo-kafka-mtls", &["localhost"])?;
        let client = ca.client(&[(rcgen::DnType::CommonName, "cgo-client")])?;
        fs::write(self.ca_pem_path(), ca.pem())?;
        fs::write(self.untrusted_ca_pem_path(), Ca::new("cgo-untrusted-ca")?.pem())?;
        fs::write(self.client_certificate_path(), &client.certificate_pem)?;
        fs::write(self.client_key_path(), &client.key_pem)?;

        // The broker's key and chain go inline (Kafka's PEM key store: `ssl.keystore.key` and
        // `ssl.keystore.certificate.chain`, an unencrypted key); a properties file reads `\n` in a
        // value as a line break.
        let inline = |pem: &str| pem.trim_end().replace('\n', "\\n");
        let (ssl, mtls, sasl, reauth) = (self.ssl_port, self.mtls_port, self.sasl_port, self.reauth_port);
        let scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
        let settings = format!(
            "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n\
             listener.name.ssl.ssl.keystore.type=PEM\n\
             listener.name.ssl.ssl.keystore.certificate.chain={broker_chain}\n\
             listener.name.ssl.ssl.keystore.key={broker_key}\n\
             listener.name.mtls.ssl.keystore.type=PEM\n\
             listener.name.mtls.ssl.keystore.certificate.chain={mtls_chain}\n\
             listener.name.mtls.ssl.keystore.key={mtls_key}\n\
             listener.name.mtls.ssl.truststore.type=PEM\n\
             listener.name.mtls.ssl.truststore.location={ca}\n\
             listener.name.mtls.ssl.client.auth=required\n\
             listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{password}\";\n\
             listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={scram_login}\n\
             listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram_login}\n\
             listener.name.reauth.sasl.enabled.mechanisms=SCRAM-SHA-256\n\
             listener.name.reauth.scram-sha-256.sasl.jaas.config={scram_login}\n\
             listener.name.reauth.scram-sha-256.connections.max.reauth.ms={reauth_ms}\n",
            broker_chain = inline(&broker.certificate_pem),
            broker_key = inline(&broker.key_pem),
            mtls_chain = inline(&localhost_only.certificate_pem),
            mtls_key = inline(&localhost_only.key_pem),
            ca = self.ca_pem_path().display(),
            password = self.password,
            reauth_ms = REAUTH_SESSION.as_millis(),
        );
        Ok(Listeners {
            listeners: format!(
                ",SSL://127.0.0.1:{ssl},MTLS://127.0.0.1:{mtls},SASL_PLAINTEXT://127.0.0.1:{sasl},REAUTH://127.0.0.1:{reauth}"
            ),
            advertised: format!(
                ",SSL://127.0.0.1:{ssl},MTLS://localhost:{mtls},SASL_PLAINTEXT://127.0.0.1:{sasl},REAUTH://127.0.0.1:{reauth}"
            ),
            protocols: ",SSL:SSL,MTLS:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,REAUTH:SASL_PLAINTEXT".to_string(),
            settings,
        })
    }
}

impl Kafka {
    /// Formats storage and starts a broker on free 127.0.0.1 ports; returns once it serves.
    pub fn start() -> Result<Kafka> {
        Kafka::start_with(false)
    }

    /// [`Kafka::start`] with four more listeners (see [`SecuredListeners`]): `SSL`, `MTLS`,
    /// `SASL_PLAINTEXT` and `REAUTH`, with a fresh CA, certificates and SCRAM credentials.
    pub fn start_secured() -> Result<Kafka> {
        Kafka::start_with(true)
    }

    fn start_with(secured: bool) -> Result<Kafka> {
        let controller_port = free_port();
        let node = Node { id: 1, controller_port, hosts_controller: true, cluster_id: random_cluster_id() };
        Kafka::start_node(&node, secured)
    }

    /// A cluster of `brokers` brokers (node 1 also the KRaft controller), for what depends on how
    /// many brokers there are (requests per broker, coordinators spread over brokers). Each is
    /// started and has joined before the next; the controller's node is the first.
    pub fn start_cluster(brokers: usize) -> Result<Vec<Kafka>> {
        let controller_port = free_port();
        let cluster_id = random_cluster_id();
        (1..=brokers.max(1))
            .map(|id| {
                let node = Node { id, controller_port, hosts_controller: id == 1, cluster_id: cluster_id.clone() };
                Kafka::start_node(&node, false)
            })
            .collect()
    }

    fn start_node(node: &Node, secured: bool) -> Result<Kafka> {
        let libs = kafka_libs()?;
        let dir = tempfile::Builder::new().prefix("cgo-kafka-").tempdir()?;
        let port = free_port();
        let controller_port = node.controller_port;
        let data = dir.path().join("data");
        let secured = secured.then(|| SecuredListeners {
            ssl_port: free_port(),
            mtls_port: free_port(),
            sasl_port: free_port(),
            reauth_port: free_port(),
            pki: dir.path().join("pki"),
            password: format!("pw-{}", random_cluster_id()),
        });
        let Listeners { listeners, advertised, protocols, settings } = match &secured {
            None => Listeners::default(),
            Some(secured) => secured.configure()?,
        };
        let (roles, controller_listener) = match node.hosts_controller {
            true => ("broker,controller", format!(",CONTROLLER://127.0.0.1:{controller_port}")),
            false => ("broker", String::new()),
        };
        let properties = format!(
            "process.roles={roles}\n\
             node.id={id}\n\
             controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port}{controller_listener}{listeners}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}{advertised}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}\n\
             {settings}\
             log.dirs={data}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=3\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             allow.everyone.if.no.acl.found=true\n\
             log.segment.bytes=1048576\n",
            data = data.display(),
            id = node.id,
        );
        fs::write(dir.path().join("server.properties"), properties)?;
        fs::write(
            dir.path().join("log4j2.properties"),
            "rootLogger.level=INFO\nrootLogger.appenderRef.file.ref=file\n\
             appender.file.type=File\nappender.file.name=file\n\
             appender.file.fileName=${sys:cgo.log.file}\n\
             appender.file.layout.type=PatternLayout\n\
             appender.file.layout.pattern=[%d] %p %m (%c)%n\n",
        )?;

        let cluster_id = &node.cluster_id;
        // SCRAM credentials live in the cluster's metadata: written when storage is formatted.
        let scram: Vec<String> = match &secured {
            None => Vec::new(),
            Some(secured) => ["SCRAM-SHA-256", "SCRAM-SHA-512"]
                .iter()
                .flat_map(|m| {
                    ["--add-scram".to_string(), format!("{m}=[name={SASL_USER},password={}]", secured.password)]
                })
                .collect(),
        };
        let format = Command::new(java())
            .args(jvm_tool_flags())
            .arg("-cp")
            .arg(classpath(&libs))
            .arg(format!("-Dlog4j2.configurationFile={}", dir.path().join("log4j2.properties").display()))
            .arg(format!("-Dcgo.log.file={}", dir.path().join("format.log").display()))
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
            .arg(dir.path().join("server.properties"))
            .args(&scram)
            .output()
            .context("run kafka.tools.StorageTool (is Java 17+ installed?)")?;
        if !format.status.success() {
            bail!(
                "formatting Kafka storage failed: {}{}",
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            );
        }

        let mut kafka = Kafka { process: None, dir, libs, port, secured };
        kafka.start_process()?;
        Ok(kafka)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn start_process(&mut self) -> Result<()> {
        let log = self.log_file();
        // A restart appends to the same log; only a "started" line after this offset counts.
        let log_offset = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(java());
        command
            .args(["-Xms256m", &format!("-Xmx{}", max_heap()), "-XX:+UseSerialGC", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.path().join("log4j2.properties").display()))
            .arg(format!("-Dcgo.log.file={}", log.display()))
            .arg("-cp")
            .arg(classpath(&self.libs))
            .arg("kafka.Kafka")
            .arg(self.dir.path().join("server.properties"))
            .env("LD_PRELOAD", NOSYNC_LIBRARY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.dir.path().join("stderr.log"))?);
        let mut process = Guarded::spawn("kafka", command).context("start the Kafka broker")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = fs::read(&log).unwrap_or_default();
            if text.len() as u64 > log_offset
                && String::from_utf8_lossy(&text[log_offset as usize..]).contains(STARTED_LINE)
            {
                break;
            }
            if let Some(status) = process.exited() {
                let text = String::from_utf8_lossy(&text);
                // The cause is logged before the shutdown that fills the tail.
                let errors: Vec<&str> =
                    text.lines().filter(|l| l.contains(" ERROR ") || l.contains("Exception:")).take(10).collect();
                bail!(
                    "Kafka exited during start-up ({status}); stderr:\n{}\nfirst errors:\n{}\nlog tail:\n{}",
                    fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
                    errors.join("\n"),
                    tail(&text, 40)
                );
            }
            if Instant::now() > deadline {
                bail!("Kafka did not start within 120s; log tail:\n{}", tail(&String::from_utf8_lossy(&text), 40));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.process = Some(process);
        Ok(())
    }

    /// `host:port` for clients.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TLS and SASL listeners; panics on a broker from [`Kafka::start`], which has none.
    pub fn secured(&self) -> &SecuredListeners {
        self.secured.as_ref().expect("a broker from Kafka::start_secured")
    }

    /// Kills the broker (an outage); its data stays for [`Kafka::restart`].
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the broker again on the same ports with the same data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.start_process()
    }

    /// Runs a Kafka main class (a tool) with this broker's jars and returns its output.
    pub fn run_class(&self, main_class: &str, args: &[&str]) -> Result<Output> {
        self.tool(main_class, args).output().with_context(|| format!("run {main_class}"))
    }

    /// Starts one of Kafka's tools in the background (e.g. a console consumer); it is killed when
    /// the returned guard drops.
    pub fn spawn_tool(&self, main_class: &str, args: &[&str]) -> Result<Guarded> {
        let mut command = self.tool(main_class, args);
        command.stdout(Stdio::null()).stderr(Stdio::null());
        Guarded::spawn(main_class, command).with_context(|| format!("start {main_class}"))
    }

    fn tool(&self, main_class: &str, args: &[&str]) -> Command {
        let mut command = Command::new(java());
        command
            .args(jvm_tool_flags())
            .arg(format!("-Dlog4j2.configurationFile={}", self.dir.path().join("log4j2.properties").display()))
            .arg(format!("-Dcgo.log.file={}", self.dir.path().join("tools.log").display()))
            .arg("-cp")
            .arg(classpath(&self.libs))
            .arg(main_class)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// `kafka-consumer-groups` with its peak resident memory in KiB (from `wait4`), for
    /// benchmarks that compare memory with the reference tool.
    pub fn consumer_groups_measured(&self, args: &[&str]) -> Result<(Output, u64)> {
        use std::io::Read;
        use std::os::unix::process::ExitStatusExt;
        let bootstrap = self.bootstrap_servers();
        let mut full = vec!["--bootstrap-server", bootstrap.as_str()];
        full.extend_from_slice(args);
        let mut child = self
            .tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", &full)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run kafka-consumer-groups")?;
        // Drain both pipes while the tool runs: its output can exceed a pipe's buffer.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).map(|_| bytes)
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it for our own child, which is reaped here
        // (the `Child` is not waited on again).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped != pid {
            bail!("wait4 on kafka-consumer-groups failed: {}", std::io::Error::last_os_error());
        }
        let output = Output {
            status: std::process::ExitStatus::from_raw(status),
            stdout: stdout.join().expect("stdout reader")?,
            stderr: stderr.join().expect("stderr reader")?,
        };
        // Linux reports ru_maxrss in KiB.
        Ok((output, usage.ru_maxrss as u64))
    }

    /// Kafka's own `kafka-consumer-groups` (the reference implementation) against this broker.
    pub fn consumer_groups(&self, args: &[&str]) -> Result<Output> {
        let bootstrap = self.bootstrap_servers();
        let mut full = vec!["--bootstrap-server", bootstrap.as_str()];
        full.extend_from_slice(args);
        self.run_class("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", &full)
    }

    /// The release of this broker's jars (`4.4.0`), from the name of its `kafka_2.13` jar.
    pub fn version(&self) -> Option<String> {
        kafka_version(&self.libs)
    }

    /// `kafka-acls`' main class: Kafka 4 moved it from the Scala core to the tools.
    fn acl_command(&self) -> &'static str {
        match self.version() {
            Some(version) if version.starts_with("3.") => "kafka.admin.AclCommand",
            _ => "org.apache.kafka.tools.AclCommand",
        }
    }

    /// `kafka-acls --add` with these arguments (e.g. `--deny-principal User:ANONYMOUS --operation
    /// Read --topic t`). The broker authorizes with StandardAuthorizer and allows everything on
    /// resources without ACLs, so tests take a permission away from one topic or group only.
    /// Returns once the broker enforces them: the controller accepts ACLs before the broker has
    /// applied them, and a test acting at once could still be allowed.
    pub fn add_acls(&self, args: &[&str]) -> Result<()> {
        let bootstrap = self.bootstrap_servers();
        let mut full = vec!["--bootstrap-server", bootstrap.as_str(), "--add", "--force"];
        full.extend_from_slice(args);
        let out = self.run_class(self.acl_command(), &full)?;
        if !out.status.success() {
            bail!(
                "kafka-acls {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The broker answers DescribeAcls from the authorizer it enforces them with.
        let expected = acl_lines(args);
        anyhow::ensure!(!expected.is_empty(), "kafka-acls {args:?}: name a principal and an operation");
        let mut list = vec!["--bootstrap-server", bootstrap.as_str(), "--list"];
        for flag in ["--topic", "--group", "--transactional-id"] {
            list.extend(flag_values(args, flag).into_iter().flat_map(|name| [flag, name]));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run_class(self.acl_command(), &list)?;
            let listed = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && expected.iter().all(|line| listed.contains(line.as_str())) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the broker did not list the ACLs {expected:?} within 60 s: {listed}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the broker and deletes its folder, from a shared reference (at process exit).
    pub(crate) fn discard(&self) {
        if let Some(process) = &self.process {
            process.kill_now();
        }
        let _ = fs::remove_dir_all(self.dir.path());
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The broker's largest heap: 768 MiB, or `CGO_KAFKA_HEAP` (a JVM size such as `2g`) for runs
/// with tens of thousands of partitions.
fn max_heap() -> String {
    std::env::var("CGO_KAFKA_HEAP").ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| "768m".into())
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}

/// Tools are short-lived: a small heap and C1 only start them about twice as fast.
fn jvm_tool_flags() -> [&'static str; 4] {
    ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A KRaft cluster id: 16 random bytes in URL-safe base64 without padding (22 characters).
///
/// Like Kafka's own `Uuid.randomUuid()`, an id starting with `-` is drawn again: StorageTool's
/// argument parser would take it for an option (`argument --cluster-id/-t: expected one
/// argument`), which once failed a CI run (1 start in 64).
fn random_cluster_id() -> String {
    loop {
        let mut bytes = [0u8; 16];
        // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        assert_eq!(n, 16, "getrandom failed");
        let id = url_safe_base64(&bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn url_safe_base64(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let word = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [word >> 18, word >> 12, word >> 6, word];
        for sextet in &sextets[..chunk.len() + 1] {
            out.push(ALPHABET[(sextet & 0x3f) as usize] as char);
        }
    }
    out
}

/// The values given to `flag` in a tool's arguments (`--group g --group h`: g and h).
fn flag_values<'a>(args: &[&'a str], flag: &str) -> Vec<&'a str> {
    args.windows(2).filter(|pair| pair[0] == flag).map(|pair| pair[1]).collect()
}

/// How `kafka-acls --list` shows the ACLs that `args` add, e.g. `principal=User:ANONYMOUS,
/// host=*, operation=DESCRIBE, permissionType=DENY`.
fn acl_lines(args: &[&str]) -> Vec<String> {
    let operations: Vec<String> = flag_values(args, "--operation")
        .iter()
        .map(|operation| {
            // Describe -> DESCRIBE, DescribeConfigs -> DESCRIBE_CONFIGS
            let mut upper = String::new();
            for (i, c) in operation.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    upper.push('_');
                }
                upper.push(c.to_ascii_uppercase());
            }
            upper
        })
        .collect();
    let principals = flag_values(args, "--allow-principal")
        .into_iter()
        .map(|p| (p, "ALLOW"))
        .chain(flag_values(args, "--deny-principal").into_iter().map(|p| (p, "DENY")));
    principals
        .flat_map(|(principal, permission)| {
            operations.iter().map(move |operation| {
                format!("principal={principal}, host=*, operation={operation}, permissionType={permission}")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_are_expected_as_kafka_acls_lists_them() {
        let args = ["--deny-principal", "User:ANONYMOUS", "--operation", "DescribeConfigs", "--group", "g"];
        assert_eq!(
            acl_lines(&args),
            ["principal=User:ANONYMOUS, host=*, operation=DESCRIBE_CONFIGS, permissionType=DENY"]
        );
        let args = ["--allow-principal", "User:a", "--operation", "All", "--operation", "Read", "--topic", "t"];
        assert_eq!(acl_lines(&args).len(), 2);
    }

    #[test]
    fn base64_matches_the_rfc_4648_url_safe_alphabet() {
        // 0xfb 0xff ... exercises both URL-safe characters ('-' = 62, '_' = 63).
        let mut bytes = [0u8; 16];
        bytes[0] = 0xfb;
        bytes[1] = 0xff;
        bytes[15] = 0x01;
        assert_eq!(url_safe_base64(&bytes), "-_8AAAAAAAAAAAAAAAAAAQ");
    }

    #[test]
    fn cluster_ids_never_start_with_a_dash() {
        for _ in 0..2000 {
            let id = random_cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id}");
        }
    }
}
