//! `kubectl consumergroup`, the built binary run as a person runs it (and through a real kubectl's
//! plugin discovery), against the real apiserver and broker with the operator running: list, lag
//! (status, live, watch), describe, pause and resume, reset with preview, export, typed and
//! `--yes` approval, declining, rollback, and the exit codes of Succeeded, Failed, declined,
//! timed out and refused flag combinations. The exported plan is checked with Kafka's own
//! `kafka-consumer-groups --reset-offsets --from-file --dry-run`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use consumer_group_operator::crd::{ClusterKafkaConnection, ConsumerGroup, OffsetReset, ResetMode, ResetPhase};
use consumer_group_operator::kafka::{KafkaClient, TopicPartition};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const WAIT: Duration = Duration::from_secs(90);
const TIMEOUT: Duration = Duration::from_secs(30);
const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-consumergroup");

fn kafka(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])).unwrap()
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.to_string(), partition }
}

async fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let scope: Vec<_> = (0..partitions).map(|p| tp(topic, p)).collect();
    let offsets = kafka(bootstrap).list_consumer_group_offsets(group, Some(&scope), TIMEOUT).await.unwrap();
    scope.iter().map(|tp| offsets.get(tp).copied().flatten()).collect()
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

/// The name of the OffsetReset a reset or rollback run created (`offsetreset/NAME created`).
fn created_reset(run: &Run) -> String {
    let line = run.stderr.lines().find(|l| l.ends_with("created in DryRun; waiting for its plan"));
    let line = line.unwrap_or_else(|| panic!("no OffsetReset was created: {run:?}"));
    line.trim_start_matches("offsetreset/").split_whitespace().next().unwrap().to_string()
}

/// The rows of the plan table on stdout: (partition, current, new, delta).
fn plan_rows(run: &Run, topic: &str) -> Vec<(i32, String, String, String)> {
    run.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() == 5 && cols[0] == topic)
        .map(|cols| (cols[1].parse().unwrap(), cols[2].to_string(), cols[3].to_string(), cols[4].to_string()))
        .collect()
}

/// Runs the plugin with an open stdin, sends it SIGINT (Ctrl-C) once it asks for approval, and
/// returns how it ended.
async fn interrupt_at_prompt(kubeconfig: &Path, args: &[&str]) -> Run {
    use std::io::Read;
    let mut child = Command::new(PLUGIN)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The prompt ends without a line break: collect stderr as it comes.
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn({
        let stderr = stderr.clone();
        move || {
            let mut chunk = [0u8; 4096];
            while let Ok(read @ 1..) = pipe.read(&mut chunk) {
                stderr.lock().unwrap().extend_from_slice(&chunk[..read]);
            }
        }
    });
    let asked = common::eventually(WAIT, || {
        let text = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        async move { text.contains("[y/N]").then_some(()) }
    })
    .await;
    assert!(asked.is_some(), "the plugin never asked: {}", String::from_utf8_lossy(&stderr.lock().unwrap()));
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let stdin = child.stdin.take();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    drop(stdin);
    reader.join().unwrap();
    let mut run = finished(output);
    run.stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    run
}

struct Setup {
    env: &'static testenv::SharedEnv,
    client: kube::Client,
    namespace: String,
    kubeconfig: PathBuf,
    bootstrap: String,
    groups: Api<ConsumerGroup>,
    resets: Api<OffsetReset>,
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
        resets: Api::namespaced(client.clone(), &namespace),
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
async fn flag_combinations_the_kafka_tool_refuses_are_refused_with_exit_code_2() {
    let s = setup("plugin-usage").await;
    let (topic, group_id) = s.topic_with_commits(&[5], &[2]).await;
    let bad_csv = std::env::temp_dir().join(format!("{}.csv", testenv::unique_name("bad")));
    std::fs::write(&bad_csv, format!("{topic},zero,1\n")).unwrap();
    let bad_csv = bad_csv.to_str().unwrap().to_string();
    // (our arguments, the tool's arguments, the tool's refusal, ours)
    let cases: Vec<(Vec<&str>, Vec<&str>, &str, &str)> = vec![
        (
            vec!["--to-earliest", "--to-latest", "--topic", &topic],
            vec!["--reset-offsets", "--dry-run", "--to-earliest", "--to-latest", "--topic", &topic],
            "can't be used with option",
            "--to-earliest and --to-latest are both targets",
        ),
        (
            vec!["--topic", &topic],
            vec!["--reset-offsets", "--dry-run", "--topic", &topic],
            "requires one of the following scenarios",
            "a reset needs a target",
        ),
        (
            vec!["--to-earliest"],
            vec!["--reset-offsets", "--dry-run", "--to-earliest"],
            "One of the reset scopes should be defined",
            "a reset needs a scope",
        ),
        (
            vec!["--delete-offsets", "--all-topics"],
            vec!["--delete-offsets", "--all-topics"],
            // Kafka 4.4 lists the two options the other way round.
            "Option [delete-offsets] takes the following options: [",
            "--delete-offsets takes the topics with --topic",
        ),
    ];
    let tool_runs: Vec<_> = cases
        .iter()
        .map(|(_, tool, _, _)| {
            let mut args: Vec<String> = vec!["--group".into(), group_id.clone()];
            args.extend(tool.iter().map(|a| a.to_string()));
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                finished(testenv::shared().kafka.consumer_groups(&args).unwrap())
            })
        })
        .collect();
    for ((ours, _, tool_refusal, our_refusal), tool) in cases.iter().zip(tool_runs) {
        let tool = tool.await.unwrap();
        assert!(
            tool.stdout.contains(tool_refusal) || tool.stderr.contains(tool_refusal),
            "the tool refuses {ours:?} too: {tool:?}"
        );
        let mut args = vec!["reset", "-n", &s.namespace, "anything"];
        args.extend_from_slice(ours);
        let run = plugin(&s.kubeconfig, &args, None).await;
        assert_eq!(run.code, 2, "{ours:?}: {run:?}");
        assert!(
            run.stderr.contains(our_refusal) && run.stderr.contains("Usage: kubectl consumergroup reset "),
            "{ours:?}: {run:?}"
        );
    }
    // Mistakes in a flag's value are usage errors too, before anything is sent.
    let refused: [(&[&str], &str); 5] = [
        (&["--to-datetime", "2026-11-20T08:00:00", "--all-topics"], "with a zone"),
        (&["--by-duration", "an hour", "--all-topics"], "not an ISO-8601 duration"),
        (&["--to-earliest", "--topic", "orders:one"], "partitions must be numbers"),
        (&["--from-file", &bad_csv], "line 1: partition and offset must be numbers"),
        (&["--to-earliest", "--all-topics", "--yes", "--dry-run"], "cannot be used with"),
    ];
    for (flags, message) in refused {
        let mut args = vec!["reset", "-n", &s.namespace, "anything"];
        args.extend_from_slice(flags);
        let run = plugin(&s.kubeconfig, &args, None).await;
        assert_eq!(run.code, 2, "{flags:?}: {run:?}");
        assert!(run.stderr.contains(message), "{flags:?}: {run:?}");
    }
    let resets = s.resets.list(&Default::default()).await.unwrap();
    assert!(resets.items.is_empty(), "a refused command creates nothing");
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

    // A group with its own connection Secret: --live reads it with the caller's permissions, and
    // prints no value of it.
    let password = "Zq9-plugin-do-not-show";
    let secret: Secret = serde_json::from_value(serde_json::json!({"metadata": {"name": "kafka-client",
        "labels": {consumer_group_operator::crd::CLIENT_PROPERTIES_LABEL: "true"}},
        "stringData": {"security.protocol": "PLAINTEXT", "sasl.password": password}}))
    .unwrap();
    Api::<Secret>::namespaced(s.client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap();
    // Its own group id: two ConsumerGroups of one group id on one cluster conflict.
    let secured_id = testenv::unique_name("g-secured");
    let commits = [(tp(&topic, 0), 8), (tp(&topic, 1), 5), (tp(&topic, 2), 10)].into_iter().collect();
    common::commit(&kafka(&s.bootstrap), &secured_id, &commits).await;
    let spec = serde_json::json!({"groupId": secured_id, "topics": [topic], "replicas": 0,
        "kafka": {"bootstrapServers": s.bootstrap, "clientPropertiesSecretRef": {"name": "kafka-client"}},
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("secured", spec)).await.unwrap();
    let secured = plugin(&s.kubeconfig, &["lag", "secured", "-n", ns, "--live"], None).await;
    assert_eq!(secured.code, 0, "{secured:?}");
    assert!(secured.stdout.contains("total lag 7, read from Kafka now"), "{secured:?}");
    // A person allowed to read ConsumerGroups but not Secrets sees status, and is told why live
    // reading is refused.
    let role: Role = serde_json::from_value(serde_json::json!({"metadata": {"name": "cg-reader"},
        "rules": [{"apiGroups": ["kafka.operators.dev"], "resources": ["consumergroups"], "verbs": ["get", "list"]}]}))
    .unwrap();
    Api::<Role>::namespaced(s.client.clone(), ns).create(&PostParams::default(), &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({"metadata": {"name": "cg-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cg-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "reader"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(s.client.clone(), ns).create(&PostParams::default(), &binding).await.unwrap();
    let reader = std::env::temp_dir().join(format!("{}.kubeconfig", testenv::unique_name("reader")));
    let yaml = s.env.kube.kubeconfig_yaml();
    let key_line = yaml.lines().find(|l| l.trim_start().starts_with("client-key:")).unwrap();
    std::fs::write(&reader, yaml.replace(key_line, &format!("{key_line}\n    as: reader"))).unwrap();
    s.measured("secured").await;
    let from_status = plugin(&reader, &["lag", "secured", "-n", ns], None).await;
    assert_eq!(from_status.code, 0, "{from_status:?}");
    let refused = plugin(&reader, &["lag", "secured", "-n", ns, "--live"], None).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("forbidden") && refused.stderr.contains("secrets"), "{refused:?}");
    for run in [&secured, &from_status, &refused] {
        assert!(!run.stdout.contains(password) && !run.stderr.contains(password), "{run:?}");
    }
    std::fs::remove_file(&reader).ok();

    // A group on a ClusterKafkaConnection: its Secret is in the operator's namespace (here the
    // test's), which the plugin is told.
    let shared = testenv::unique_name("plugin-conn");
    let connection: ClusterKafkaConnection = serde_json::from_value(serde_json::json!({"metadata": {"name": shared},
        "spec": {"bootstrapServers": s.bootstrap, "clientPropertiesSecretRef": {"name": "kafka-client"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}))
    .unwrap();
    Api::<ClusterKafkaConnection>::all(s.client.clone()).create(&PostParams::default(), &connection).await.unwrap();
    let by_ref_id = testenv::unique_name("g-by-ref");
    common::commit(&kafka(&s.bootstrap), &by_ref_id, &commits).await;
    let spec = serde_json::json!({"groupId": by_ref_id, "topics": [topic], "replicas": 0,
        "kafka": {"connectionRef": {"kind": "ClusterKafkaConnection", "name": shared}},
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}});
    s.groups.create(&PostParams::default(), &common::consumer_group("by-ref", spec)).await.unwrap();
    let untold = plugin(&s.kubeconfig, &["lag", "by-ref", "-n", ns, "--live"], None).await;
    assert_eq!(untold.code, 1, "{untold:?}");
    assert!(untold.stderr.contains("pass --operator-namespace NAMESPACE"), "{untold:?}");
    let told = plugin(&s.kubeconfig, &["lag", "by-ref", "-n", ns, "--live", "--operator-namespace", ns], None).await;
    assert_eq!(told.code, 0, "{told:?}");
    assert!(told.stdout.contains("total lag 7, read from Kafka now"), "{told:?}");
    let described = plugin(&s.kubeconfig, &["describe", "by-ref", "-n", ns], None).await;
    let kafka_line = format!("Kafka:         ClusterKafkaConnection {shared} (spec.kafka.connectionRef)");
    assert!(described.stdout.contains(&kafka_line), "{described:?}");
    Api::<ClusterKafkaConnection>::all(s.client.clone()).delete(&shared, &Default::default()).await.unwrap();
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
    // A reset of a paused group would wait for the resume: said before asking.
    let args = ["reset", "orders", "-n", ns, "--to-latest", "--all-topics"];
    let paused_reset = plugin(&s.kubeconfig, &args, Some("n\n")).await;
    assert_eq!(paused_reset.code, 3, "{paused_reset:?}");
    assert!(
        paused_reset.stderr.contains("consumergroup/orders is paused: once approved, the reset waits"),
        "{paused_reset:?}"
    );
    let resume = plugin(&s.kubeconfig, &["resume", "orders", "-n", ns, "-o", "yaml"], None).await;
    assert_eq!(resume.code, 0, "{resume:?}");
    let resumed: ConsumerGroup = serde_yaml::from_str(&resume.stdout).expect("yaml");
    assert!(!resumed.spec.paused);

    let missing = plugin(&s.kubeconfig, &["describe", "absent", "-n", ns], None).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(missing.stderr.contains("ConsumerGroup \"absent\" not found"), "{missing:?}");
    std::fs::remove_file(&kubeconfig).ok();
}

/// A consumer outside the cluster in `group_id` that commits nothing, until dropped.
struct Outsider {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outsider {
    fn join(bootstrap: &str, group_id: &str, topic: &str) -> Outsider {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group_id)
            .set("client.id", "laptop-consumer")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        });
        Outsider { stop, thread: Some(thread) }
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test]
async fn a_reset_is_previewed_exported_approved_followed_and_rolled_back() {
    let s = setup("plugin-reset").await;
    let (topic, group_id) = s.topic_with_commits(&[10, 10, 10], &[8, 5, 10]).await;
    let _operator = s.operator().await;
    s.consumer_group("exec", &group_id, &topic, 2).await;
    s.measured("exec").await;
    let ns = s.namespace.as_str();
    let original = vec![Some(8), Some(5), Some(10)];

    // Preview only, exported as the tool's CSV; the OffsetReset stays in DryRun.
    let csv = std::env::temp_dir().join(format!("{}.csv", testenv::unique_name("plan")));
    let csv_path = csv.to_str().unwrap();
    let args = ["reset", "exec", "-n", ns, "--shift-by", "-4", "--all-topics", "--dry-run", "--export", csv_path];
    let preview = plugin(&s.kubeconfig, &args, None).await;
    assert_eq!(preview.code, 0, "{preview:?}");
    let header = preview.stdout.lines().next().unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(header, ["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "DELTA"]);
    let rows = plan_rows(&preview, &topic);
    let want = [(0, "8", "4", "-4"), (1, "5", "1", "-4"), (2, "10", "6", "-4")];
    let want: Vec<_> = want.iter().map(|(p, c, n, d)| (*p, c.to_string(), n.to_string(), d.to_string())).collect();
    assert_eq!(rows, want, "{preview:?}");
    assert!(preview.stdout.contains("Total: 3 partitions, delta -12: 12 messages to read again"), "{preview:?}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), format!("{topic},0,4\n{topic},1,1\n{topic},2,6\n"));
    let kept = created_reset(&preview);
    let kept_reset = s.resets.get(&kept).await.unwrap();
    assert_eq!(kept_reset.spec.mode, ResetMode::DryRun);
    assert_eq!(kept_reset.status.unwrap().phase, Some(ResetPhase::Planned));

    // Kafka's tool reads the export and plans the same offsets; ours, reading it back, too.
    let tool = tokio::task::spawn_blocking({
        let (group_id, csv) = (group_id.clone(), csv_path.to_string());
        move || {
            let args = ["--reset-offsets", "--group", &group_id, "--from-file", &csv, "--dry-run"];
            finished(testenv::shared().kafka.consumer_groups(&args).unwrap())
        }
    })
    .await
    .unwrap();
    let tool_plan: BTreeMap<i32, i64> = tool
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.len() >= 4 && cols[1] == topic)
        .map(|cols| (cols[2].parse().unwrap(), cols[3].parse().unwrap()))
        .collect();
    assert_eq!(tool_plan, BTreeMap::from([(0, 4), (1, 1), (2, 6)]), "{tool:?}");
    let args = ["reset", "exec", "-n", ns, "--from-file", csv_path, "--dry-run", "-o", "yaml"];
    let reread = plugin(&s.kubeconfig, &args, None).await;
    assert_eq!(reread.code, 0, "{reread:?}");
    let planned: OffsetReset = serde_yaml::from_str(&reread.stdout).expect("the plan as yaml");
    let ours: BTreeMap<i32, i64> =
        planned.status.unwrap().plan.iter().map(|p| (p.partition, p.new_offset.unwrap())).collect();
    assert_eq!(ours, tool_plan);
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, original, "previews change nothing");
    let before_declining = s.resets.list(&Default::default()).await.unwrap().items.len();

    // Declined by typing n: nothing runs and the DryRun is deleted (exit code 3).
    let declined =
        plugin(&s.kubeconfig, &["reset", "exec", "-n", ns, "--to-earliest", "--all-topics"], Some("n\n")).await;
    assert_eq!(declined.code, 3, "{declined:?}");
    assert!(
        declined.stderr.contains("Execute offsetreset/") && declined.stderr.contains("not approved"),
        "{declined:?}"
    );
    assert!(declined.stderr.contains("no members now"), "the members are shown before approval: {declined:?}");
    assert_eq!(s.resets.list(&Default::default()).await.unwrap().items.len(), before_declining);
    // No answer at all (stdin closed) declines too.
    let closed = plugin(&s.kubeconfig, &["reset", "exec", "-n", ns, "--to-earliest", "--all-topics"], None).await;
    assert_eq!(closed.code, 3, "{closed:?}");
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, original);
    // Ctrl-C at the prompt: the DryRun is deleted, exit code 130.
    let interrupted =
        interrupt_at_prompt(&s.kubeconfig, &["reset", "exec", "-n", ns, "--to-latest", "--all-topics"]).await;
    assert_eq!(interrupted.code, 130, "{interrupted:?}");
    assert!(interrupted.stderr.contains("interrupted before approval: nothing was executed"), "{interrupted:?}");
    assert!(interrupted.stderr.contains("deleted"), "{interrupted:?}");
    assert_eq!(s.resets.list(&Default::default()).await.unwrap().items.len(), before_declining);
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, original);

    // Approved by typing y: executed and followed to Succeeded (exit code 0).
    let args = ["reset", "exec", "-n", ns, "--shift-by", "-4", "--topic", &topic];
    let executed = plugin(&s.kubeconfig, &args, Some("y\n")).await;
    assert_eq!(executed.code, 0, "{executed:?}");
    assert!(executed.stderr.contains("approved: executing"), "{executed:?}");
    assert!(executed.stderr.contains("Succeeded: committed and verified 3 partitions"), "{executed:?}");
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, vec![Some(4), Some(1), Some(6)]);
    let shifted = created_reset(&executed);

    // Rolled back with --yes.
    let rollback = plugin(&s.kubeconfig, &["rollback", &shifted, "-n", ns, "--yes"], None).await;
    assert_eq!(rollback.code, 0, "{rollback:?}");
    let rows = plan_rows(&rollback, &topic);
    assert_eq!(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(), ["8", "5", "10"], "{rollback:?}");
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, original);
    // An export that cannot be written leaves nothing behind.
    let before = s.resets.list(&Default::default()).await.unwrap().items.len();
    let args =
        ["reset", "exec", "-n", ns, "--to-earliest", "--all-topics", "--dry-run", "--export", "/nonexistent/plan.csv"];
    let unwritable = plugin(&s.kubeconfig, &args, None).await;
    assert_eq!(unwritable.code, 1, "{unwritable:?}");
    assert!(unwritable.stderr.contains("cannot write the plan to /nonexistent/plan.csv"), "{unwritable:?}");
    assert_eq!(s.resets.list(&Default::default()).await.unwrap().items.len(), before);
    let not_executed = plugin(&s.kubeconfig, &["rollback", &kept, "-n", ns, "--yes"], None).await;
    assert_eq!(not_executed.code, 1, "{not_executed:?}");
    assert!(not_executed.stderr.contains("is Planned, not Succeeded"), "{not_executed:?}");

    // describe lists the resets and their Events.
    let describe = plugin(&s.kubeconfig, &["describe", "exec", "-n", ns], None).await;
    let reset_line = describe.stdout.lines().find(|l| l.trim_start().starts_with(&shifted)).expect("the reset");
    assert!(reset_line.contains("Succeeded") && reset_line.contains(&format!("--shift-by -4 --topic {topic}")));
    assert!(describe.stdout.contains(&format!("offsetreset/{shifted}")), "its Events: {describe:?}");
    assert!(describe.stdout.contains("Scaled"), "the ConsumerGroup's Events: {describe:?}");

    // A member the operator does not run makes the execution fail: exit code 1, nothing changed.
    let outsider = Outsider::join(&s.bootstrap, &group_id, &topic);
    common::eventually(WAIT, || async {
        (s.groups.get("exec").await.ok()?.status?.group_state? == "Stable").then_some(())
    })
    .await
    .expect("the outside consumer joins");
    let args = ["reset", "exec", "-n", ns, "--to-latest", "--all-topics", "--yes", "--session-timeout-seconds", "2"];
    let failed = plugin(&s.kubeconfig, &args, None).await;
    drop(outsider);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("laptop-consumer"), "the members are named before and after: {failed:?}");
    assert!(failed.stderr.contains("Failed: ") && failed.stderr.contains("no offset changed"), "{failed:?}");
    // Quiescing lasts the session timeout at least: the progress line shows it.
    assert!(failed.stderr.contains("] Quiescing: "), "the phases are followed: {failed:?}");
    assert_eq!(committed(&s.bootstrap, &group_id, &topic, 3).await, original);
    std::fs::remove_file(&csv).ok();
}

#[tokio::test]
async fn without_an_operator_the_wait_for_a_plan_times_out_with_exit_code_4() {
    let s = setup("plugin-nobody").await;
    let (topic, group_id) = s.topic_with_commits(&[3], &[1]).await;
    // No operator watches this namespace.
    s.consumer_group("alone", &group_id, &topic, 1).await;
    let args = ["reset", "alone", "-n", &s.namespace, "--to-earliest", "--all-topics", "--yes", "--timeout", "2"];
    let run = plugin(&s.kubeconfig, &args, None).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("the operator did not answer"), "{run:?}");
    assert!(s.resets.list(&Default::default()).await.unwrap().items.is_empty(), "the unplanned DryRun is deleted");
}
