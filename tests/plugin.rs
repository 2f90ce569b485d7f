//! `kubectl consumergroup`, the built binary run as a person runs it (and through a real kubectl's
//! plugin discovery), against the real apiserver and broker with the operator running: list, lag
//! (status, live, watch), describe, pause and resume.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use consumer_group_operator::crd::ConsumerGroup;
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use kube::api::{Api, PostParams};

const WAIT: Duration = Duration::from_secs(90);
const TIMEOUT: Duration = Duration::from_secs(30);
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-consumergroup");

fn kafka(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])).unwrap()
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.to_string(), partition }
}

/// What a run of the plugin printed and how it exited.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn finished(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `kubectl-consumergroup --kubeconfig K ARGS`, typing `input` on its stdin (closed
/// otherwise), from a blocking thread.
async fn plugin(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Run {
    let mut command = Command::new(PLUGIN);
    command.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(command, input).await
}

async fn run(mut command: Command, input: Option<&str>) -> Run {
    let input = input.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the plugin");
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        finished(child.wait_with_output().unwrap())
    })
    .await
    .unwrap()
}

struct Setup {
    env: &'static testenv::SharedEnv,
    client: kube::Client,
    namespace: String,
    kubeconfig: PathBuf,
    bootstrap: String,
    groups: Api<ConsumerGroup>,
}

async fn setup(prefix: &str) -> Setup {
    let env = common::shared_env().await;
    let client = common::kube_client(&env.kube).await;
    common::install_crds(&client).await;
    let namespace = common::namespace(&client, prefix).await;
    Setup {
        env,
        kubeconfig: env.kube.kubeconfig_path(),
        bootstrap: env.kafka.bootstrap_servers(),
        groups: Api::namespaced(client.clone(), &namespace),
        client,
        namespace,
    }
}

impl Setup {
    async fn operator(&self) -> common::Operator {
        let args = common::run_args(&self.namespace, &self.bootstrap, &["--kafka-timeout-seconds", "5"]);
        common::Operator::start(&self.client, args).await
    }

    /// A topic of `counts.len()` partitions with `counts[p]` records, and a group that committed
    /// `offsets` on it.
    async fn topic_with_commits(&self, counts: &[usize], offsets: &[i64]) -> (String, String) {
        let client = kafka(&self.bootstrap);
        let topic = testenv::unique_name("plugin-topic");
        client.create_topic(&topic, counts.len() as i32, 1, TIMEOUT).await.unwrap();
        common::produce(&self.bootstrap, &topic, counts, None);
        let group_id = testenv::unique_name("g");
        let commits = offsets.iter().enumerate().map(|(p, o)| (tp(&topic, p as i32), *o)).collect();
        common::commit(&client, &group_id, &commits).await;
        (topic, group_id)
    }

    async fn consumer_group(&self, name: &str, group_id: &str, topic: &str, replicas: i32) {
        let spec = serde_json::json!({"groupId": group_id, "topics": [topic], "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
        self.groups.create(&PostParams::default(), &common::consumer_group(name, spec)).await.unwrap();
    }

    /// Waits until the operator has reported the group: lag, replicas and readiness.
    async fn measured(&self, name: &str) {
        common::eventually(WAIT, || async {
            let status = self.groups.get(name).await.ok()?.status?;
            let reported = status.lag.is_some() && status.replicas.is_some() && status.desired_replicas.is_some();
            (reported && status.conditions.iter().any(|c| c.type_ == "Ready")).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("the operator never measured {name}'s lag"))
    }
}

#[tokio::test]
async fn list_lag_describe_pause_and_resume_show_what_the_operator_and_kafka_see() {
    let s = setup("plugin-read").await;
    let (topic, group_id) = s.topic_with_commits(&[10, 10, 10], &[8, 5, 10]).await;
    let _operator = s.operator().await;
    s.consumer_group("orders", &group_id, &topic, 0).await;
    s.measured("orders").await;
    let ns = s.namespace.as_str();

    // list: the table, json, and every namespace.
    let list = plugin(&s.kubeconfig, &["list", "-n", ns], None).await;
    assert_eq!(list.code, 0, "{list:?}");
    let header = list.stdout.lines().next().unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        header,
        ["NAME", "GROUP", "TOPICS", "PARTITIONS", "REPLICAS", "LAG", "TIME-LAG", "STATE", "HEALTH", "READY", "AGE"]
    );
    let row = list.stdout.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(&row[..6], ["orders", group_id.as_str(), topic.as_str(), "3", "0/0", "7"], "{list:?}");
    assert_eq!(row[9], "True", "{list:?}");
    let json = plugin(&s.kubeconfig, &["list", "-n", ns, "-o", "json"], None).await;
    let items: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(items["kind"], "List");
    assert_eq!(items["items"][0]["spec"]["groupId"], group_id.as_str());
    let all = plugin(&s.kubeconfig, &["list", "-A"], None).await;
    assert!(all.stdout.starts_with("NAMESPACE"), "{all:?}");
    assert!(all.stdout.lines().any(|l| l.starts_with(&format!("{ns} ")) && l.contains(" orders ")), "{all:?}");

    // The namespace comes from the kubeconfig's context; --context picks another context.
    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", testenv::unique_name("plugin")));
    let yaml = s.env.kube.kubeconfig_yaml().replace("namespace: default", &format!("namespace: {ns}"));
    let elsewhere = "- name: elsewhere\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\n";
    std::fs::write(&kubeconfig, yaml.replace("current-context:", &format!("{elsewhere}current-context:"))).unwrap();
    let here = plugin(&kubeconfig, &["list"], None).await;
    assert!(here.stdout.contains("orders"), "{here:?}");
    let there = plugin(&kubeconfig, &["list", "--context", "elsewhere"], None).await;
    assert_eq!(there.code, 0, "{there:?}");
    assert!(there.stderr.contains("No ConsumerGroups found in namespace default"), "{there:?}");

    // Through kubectl's own plugin discovery, under both names.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin.path().join("kubectl-consumergroup")).unwrap();
    std::os::unix::fs::symlink(PLUGIN, bin.path().join("kubectl-cg")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let kubeconfig_flag = format!("--kubeconfig={}", s.kubeconfig.display());
    for name in ["consumergroup", "cg"] {
        // kubectl finds a plugin by the words before the first flag, and passes the rest on.
        let kubectl = |args: &[&str]| {
            let mut command = Command::new(s.env.kube.assets().join("kubectl"));
            command.args([name]).args(args).arg(&kubeconfig_flag).env("PATH", &path);
            command
        };
        let listed = run(kubectl(&["list", "-n", ns]), None).await;
        assert_eq!(listed.code, 0, "kubectl {name}: {listed:?}");
        assert!(listed.stdout.contains(&group_id), "kubectl {name}: {listed:?}");
        let help = run(kubectl(&["lag", "--help"]), None).await;
        assert!(help.stdout.contains(&format!("Usage: kubectl {name} lag")), "{help:?}");
    }

    // lag from status, in the tool's column order, and read live from Kafka: the same figures.
    let expected = [(0, "8", "10", "2"), (1, "5", "10", "5"), (2, "10", "10", "0")];
    for extra in [&[][..], &["--live", "--bootstrap-server", &s.bootstrap][..]] {
        let mut args = vec!["lag", "orders", "-n", ns];
        args.extend_from_slice(extra);
        let lag = plugin(&s.kubeconfig, &args, None).await;
        assert_eq!(lag.code, 0, "{lag:?}");
        let header = lag.stdout.lines().next().unwrap().split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            header,
            ["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS", "CLIENT-ID", "HOST"]
        );
        let rows: Vec<(i32, String, String, String)> = lag
            .stdout
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols.first() == Some(&topic.as_str()))
            .map(|c| (c[1].parse().unwrap(), c[2].to_string(), c[3].to_string(), c[4].to_string()))
            .collect();
        let want: Vec<_> =
            expected.iter().map(|(p, c, e, l)| (*p, c.to_string(), e.to_string(), l.to_string())).collect();
        assert_eq!(rows, want, "{extra:?}: {lag:?}");
        assert!(lag.stdout.contains("total lag 7"), "{lag:?}");
    }
    // Live needs bootstrap servers: the group uses the operator's default, which the plugin
    // cannot see, and it says what to pass.
    let no_bootstrap = plugin(&s.kubeconfig, &["lag", "orders", "-n", ns, "--live"], None).await;
    assert_eq!(no_bootstrap.code, 1, "{no_bootstrap:?}");
    assert!(no_bootstrap.stderr.contains("pass --bootstrap-server"), "{no_bootstrap:?}");
    let json = plugin(&s.kubeconfig, &["lag", "orders", "-n", ns, "-o", "json"], None).await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!((report["source"].as_str(), report["totalLag"].as_i64()), (Some("status"), Some(7)));
    assert_eq!(report["partitions"][1]["currentOffset"], 5);

    // --watch refreshes until interrupted; from its second reading live time lag is known.
    let mut watch = Command::new(PLUGIN)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["lag", "orders", "-n", ns, "--live", "--watch", "--interval", "1", "--bootstrap-server", &s.bootstrap])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut refreshes = 0;
    let mut second_rows = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while second_rows.len() < 3 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = seen.recv_timeout(left).expect("--watch stopped refreshing");
        if line.starts_with("Every 1s: lag of orders") {
            refreshes += 1;
        } else if refreshes == 2 && line.starts_with(&topic) {
            second_rows.push(line.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert_eq!(second_rows[1][4], "5", "{second_rows:?}");
    assert!(second_rows[1][5].parse::<i64>().is_ok(), "time lag known on the second reading: {second_rows:?}");

    // Members and assignments: a real consumer joins; describe and lag name it.
    let _consumers = common::Consumers::start(&s.bootstrap, &group_id, &topic, 1, "plugin");
    common::eventually(WAIT, || async {
        let status = s.groups.get("orders").await.ok()?.status?;
        (status.members.len() == 1 && !status.members[0].assignment.is_empty()).then_some(())
    })
    .await
    .expect("the consumer shows up in status");
    let describe = plugin(&s.kubeconfig, &["describe", "orders", "-n", ns], None).await;
    assert_eq!(describe.code, 0, "{describe:?}");
    for expected in [
        format!("Group ID:      {group_id}"),
        format!("{topic} (3 partitions)"),
        "Conditions:".to_string(),
        "KafkaReachable".to_string(),
        "plugin-0".to_string(),
        format!("{topic}:0,1,2"),
        "OffsetResets:  none".to_string(),
    ] {
        assert!(describe.stdout.contains(&expected), "{expected:?} in {describe:?}");
    }
    let json = plugin(&s.kubeconfig, &["describe", "orders", "-n", ns, "-o", "json"], None).await;
    let described: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(described["consumerGroup"]["spec"]["groupId"], group_id.as_str());
    assert!(described["events"].as_array().is_some_and(|e| !e.is_empty()), "{json:?}");
    let live =
        plugin(&s.kubeconfig, &["lag", "orders", "-n", ns, "--live", "--bootstrap-server", &s.bootstrap], None).await;
    let owners: Vec<&str> =
        live.stdout.lines().filter(|l| l.starts_with(&topic)).filter_map(|l| l.split_whitespace().nth(6)).collect();
    assert_eq!(owners, ["plugin-0"; 3], "the owning member of each partition: {live:?}");

    // pause freezes the replicas (the operator says so in Ready), resume undoes it.
    let pause = plugin(&s.kubeconfig, &["pause", "orders", "-n", ns], None).await;
    assert_eq!(pause.code, 0, "{pause:?}");
    assert!(pause.stdout.contains("consumergroup/orders paused"), "{pause:?}");
    assert!(s.groups.get("orders").await.unwrap().spec.paused);
    let acknowledged = common::eventually(WAIT, || async {
        let list = plugin(&s.kubeconfig, &["list", "-n", ns], None).await;
        list.stdout.contains("True (Paused)").then_some(())
    })
    .await;
    assert!(acknowledged.is_some(), "the operator reports the pause in Ready");
    let again = plugin(&s.kubeconfig, &["pause", "orders", "-n", ns], None).await;
    assert!(again.stderr.contains("already paused"), "{again:?}");
    let resume = plugin(&s.kubeconfig, &["resume", "orders", "-n", ns, "-o", "yaml"], None).await;
    assert_eq!(resume.code, 0, "{resume:?}");
    let resumed: ConsumerGroup = serde_yaml::from_str(&resume.stdout).expect("yaml");
    assert!(!resumed.spec.paused);

    let missing = plugin(&s.kubeconfig, &["describe", "absent", "-n", ns], None).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("ConsumerGroup \"absent\" not found"), "{missing:?}");
    std::fs::remove_file(&kubeconfig).ok();
}
