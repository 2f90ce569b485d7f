//! The group reader (`kafka::protocol`) against a real Kafka 4.1 broker: its answers checked
//! against librdkafka's and Kafka's own tool, its request counts against the batching it promises,
//! and its fault paths (a coordinator not ready yet, no broker, a refused permission). Over TLS
//! (server and mutual) and SASL (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN) too, on a second broker with
//! those listeners: the same answers as librdkafka's with the same properties, and refusals (an
//! untrusted CA, a wrong host name or password, an unsupported mechanism) that say what to fix
//! and never show a secret.

mod common;

use common::fake_kafka;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consumer_group_operator::kafka::protocol::GroupReader;
use consumer_group_operator::kafka::stats::delta;
use consumer_group_operator::kafka::{GroupProtocol, GroupState, KafkaClient, KafkaError, TopicPartition};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn broker() -> &'static testenv::Kafka {
    tokio::task::spawn_blocking(testenv::shared_kafka).await.unwrap()
}

fn properties(bootstrap: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("bootstrap.servers".to_string(), bootstrap.to_string())])
}

fn reader(bootstrap: &str) -> GroupReader {
    GroupReader::new(&properties(bootstrap)).unwrap()
}

fn client(bootstrap: &str) -> KafkaClient {
    KafkaClient::new(&properties(bootstrap)).unwrap()
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition { topic: topic.to_string(), partition }
}

fn counts(entries: &[(&str, i64)]) -> BTreeMap<String, i64> {
    entries.iter().map(|(name, count)| (name.to_string(), *count)).collect()
}

#[tokio::test]
async fn offsets_of_100_groups_take_one_find_coordinator_and_one_offset_fetch_and_match_kafka_s_tool() {
    let kafka = broker().await;
    let bootstrap = kafka.bootstrap_servers();
    let client = client(&bootstrap);
    let topic = testenv::unique_name("p-offsets");
    client.create_topic(&topic, 20, 1, TIMEOUT).await.unwrap();
    let all: Vec<TopicPartition> = (0..20).map(|p| tp(&topic, p)).collect();
    let groups: Vec<String> = (0..100).map(|_| testenv::unique_name("pg")).collect();
    // Group i commits i * 100 + p on every partition p but one in three, which stays uncommitted.
    let mut expected = BTreeMap::new();
    for (i, group) in groups.iter().enumerate() {
        let committed: BTreeMap<TopicPartition, i64> = all
            .iter()
            .filter(|t| !(t.partition as usize + i).is_multiple_of(3))
            .map(|t| (t.clone(), (i * 100) as i64 + t.partition as i64))
            .collect();
        common::commit(&client, group, &committed).await;
        let offsets: BTreeMap<TopicPartition, Option<i64>> =
            all.iter().map(|t| (t.clone(), committed.get(t).copied())).collect();
        expected.insert(group.clone(), offsets);
    }
    let scopes: BTreeMap<String, Vec<TopicPartition>> = groups.iter().map(|g| (g.clone(), all.clone())).collect();

    let reader = reader(&bootstrap);
    let read = reader.committed_offsets(&scopes, TIMEOUT).await;
    let first = reader.request_counts();
    assert_eq!(read.len(), 100);
    for group in &groups {
        let offsets = read[group].as_ref().unwrap_or_else(|e| panic!("{group}: {e}"));
        assert_eq!(offsets, &expected[group], "{group}");
    }
    // Kafka's own tool is the judge: it reads the first groups' offsets the same.
    for group in &groups[..2] {
        let out = kafka.consumer_groups(&["--describe", "--group", group]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // The tool lists committed partitions only.
        let tool: BTreeMap<TopicPartition, i64> = text
            .lines()
            .filter(|line| line.starts_with(group.as_str()))
            .map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                (tp(columns[1], columns[2].parse().unwrap()), columns[3].parse().unwrap())
            })
            .collect();
        let ours: BTreeMap<TopicPartition, i64> =
            read[group].as_ref().unwrap().iter().filter_map(|(tp, o)| o.map(|o| (tp.clone(), o))).collect();
        assert!(!tool.is_empty());
        assert_eq!(ours, tool, "kafka-consumer-groups reads {group} the same:\n{text}");
    }
    assert_eq!(first, counts(&[("ApiVersion", 1), ("FindCoordinator", 1), ("OffsetFetch", 1)]), "first read");

    let again = reader.committed_offsets(&scopes, TIMEOUT).await;
    assert!(groups.iter().all(|g| again[g].as_ref().ok() == Some(&expected[g])));
    assert_eq!(delta(&reader.request_counts(), &first), counts(&[("OffsetFetch", 1)]), "coordinators cached");

    // The cluster's feature levels: one ApiVersions on the open connection, read as
    // `kafka-features describe` reads them.
    let before = reader.request_counts();
    let features = reader.cluster_features(TIMEOUT).await.unwrap();
    assert_eq!(delta(&reader.request_counts(), &before), counts(&[("ApiVersion", 1)]), "features");
    // The tool names metadata.version's level (`4.1-IV1`) and numbers the others; it lists
    // features at level 0 too, which ApiVersions leaves out (as it does kraft.version).
    let (levels, text) = common::kafka_features(kafka);
    let tool: BTreeMap<String, String> = levels.into_iter().filter(|(_, level)| level != "0").collect();
    let ours: BTreeMap<String, String> = features
        .finalized
        .iter()
        .map(|(name, level)| match name.as_str() {
            "metadata.version" => (name.clone(), features.metadata_version().unwrap()),
            _ => (name.clone(), level.to_string()),
        })
        .collect();
    assert!(ours.contains_key("metadata.version"), "{ours:?}");
    assert_eq!(ours, tool, "kafka-features describe:\n{text}");
    println!("request counts after two reads of 100 groups: {:?}", reader.request_counts());
}

#[tokio::test]
async fn a_fresh_broker_s_coordinator_is_waited_for_and_uncommitted_partitions_are_none() {
    let fresh = tokio::task::spawn_blocking(testenv::Kafka::start).await.unwrap().unwrap();
    // No topic and no librdkafka client here: a librdkafka client with a group id looks its
    // coordinator up when created, which would start `__consumer_offsets` before the reader asks.
    // Partitions of a topic that does not exist have no commits, like any other.
    let reader = reader(&fresh.bootstrap_servers());
    let scopes = BTreeMap::from([("never-seen".to_string(), vec![tp("t", 0), tp("t", 1)])]);
    let started = Instant::now();
    let read = reader.committed_offsets(&scopes, Duration::from_secs(60)).await;
    let offsets = read["never-seen"].as_ref().unwrap_or_else(|e| panic!("after {:?}: {e}", started.elapsed()));
    assert_eq!(offsets, &BTreeMap::from([(tp("t", 0), None), (tp("t", 1), None)]));
    // The first lookup makes Kafka create `__consumer_offsets` and is answered
    // COORDINATOR_NOT_AVAILABLE: the answer above came from a retry.
    let requests = reader.request_counts();
    assert!(requests["FindCoordinator"] >= 2, "{requests:?}");
    println!("fresh broker answered after {:?} with {requests:?}", started.elapsed());
}

#[tokio::test]
async fn a_classic_group_is_described_as_kafka_s_tool_describes_it() {
    let kafka = broker().await;
    let bootstrap = kafka.bootstrap_servers();
    let client = client(&bootstrap);
    let topic = testenv::unique_name("p-classic");
    client.create_topic(&topic, 4, 1, TIMEOUT).await.unwrap();
    let group = testenv::unique_name("pg-classic");
    let consumers = common::Consumers::start(&bootstrap, &group, &topic, 2, "classic");
    let reader = reader(&bootstrap);
    let all: Vec<TopicPartition> = (0..4).map(|p| tp(&topic, p)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ours = loop {
        let described = reader.describe_groups(std::slice::from_ref(&group), TIMEOUT).await;
        if let Ok(Some(d)) = &described[&group] {
            let mut assigned: Vec<TopicPartition> = d.members.iter().flat_map(|m| m.assignment.clone()).collect();
            assigned.sort();
            if d.state == GroupState::Stable && d.members.len() == 2 && assigned == all {
                break d.clone();
            }
        }
        assert!(Instant::now() < deadline, "the group never became Stable with both members: {described:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Kafka's own tool is the judge: the same members with the same number of partitions each.
    let out = kafka.consumer_groups(&["--describe", "--group", &group, "--members"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut tool: Vec<(String, usize)> = text
        .lines()
        .filter(|line| line.starts_with(group.as_str()))
        .map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (columns[3].to_string(), columns[4].parse().unwrap())
        })
        .collect();
    tool.sort();
    let mut mine: Vec<(String, usize)> =
        ours.members.iter().map(|m| (m.client_id.clone(), m.assignment.len())).collect();
    mine.sort();
    assert_eq!(mine, tool, "kafka-consumer-groups --members:\n{text}");
    assert_eq!(ours.protocol, GroupProtocol::Classic);
    assert!(ours.members.iter().all(|m| m.client_id.starts_with("classic-")), "{ours:?}");
    drop(consumers);
}

#[tokio::test]
async fn a_kip_848_group_is_described_with_topic_names_as_kafka_s_tool_sees_it() {
    let kafka = broker().await;
    if !common::serves_kip_848(kafka) {
        return;
    }
    let bootstrap = kafka.bootstrap_servers();
    let client = client(&bootstrap);
    let topic = testenv::unique_name("p-848");
    client.create_topic(&topic, 3, 1, TIMEOUT).await.unwrap();
    let group = testenv::unique_name("pg-848");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("group.protocol", "consumer")
        .set("client.id", "kip848-member")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let all: Vec<TopicPartition> = (0..3).map(|p| tp(&topic, p)).collect();
    let reader = reader(&bootstrap);
    let deadline = Instant::now() + Duration::from_secs(60);
    let described = loop {
        let _ = consumer.poll(Duration::from_millis(100));
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned == 3 {
            let described = reader.describe_groups(std::slice::from_ref(&group), TIMEOUT).await;
            if let Ok(Some(d)) = &described[&group]
                && d.state == GroupState::Stable
                && d.members.first().is_some_and(|m| m.assignment == all)
            {
                break d.clone();
            }
            assert!(Instant::now() < deadline, "never Stable with the whole topic assigned: {described:?}");
        }
        assert!(Instant::now() < deadline, "the consumer never got its 3 partitions (has {assigned})");
    };
    assert_eq!(described.protocol, GroupProtocol::Consumer);
    assert_eq!(described.members.len(), 1);
    assert_eq!(described.members[0].client_id, "kip848-member");
    assert!(!described.partition_assignor.is_empty(), "{described:?}");

    // Kafka's own tool: `GROUP COORDINATOR (ID) ASSIGNMENT-STRATEGY STATE #MEMBERS`.
    let out = kafka.consumer_groups(&["--describe", "--group", &group, "--state"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let row: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.first() == Some(&group.as_str()))
        .unwrap_or_else(|| panic!("no row for {group} in {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(row[row.len() - 2..], ["Stable", "1"], "{text}");
    assert_eq!(row[row.len() - 3], described.partition_assignor, "{text}");

    // Both protocols and an unknown group in one call: one ConsumerGroupDescribe, then one
    // DescribeGroups for the two groups it does not know (the classic one and the unknown one).
    let offsets_only = testenv::unique_name("pg-offsets-only");
    common::commit(&client, &offsets_only, &BTreeMap::from([(tp(&topic, 0), 1)])).await;
    let unknown = testenv::unique_name("pg-unknown");
    let before = reader.request_counts();
    let described = reader.describe_groups(&[group.clone(), offsets_only.clone(), unknown.clone()], TIMEOUT).await;
    let requests = delta(&reader.request_counts(), &before);
    assert_eq!(requests, counts(&[("ConsumerGroupDescribe", 1), ("DescribeGroups", 1), ("FindCoordinator", 1)]));
    assert_eq!(described[&group].as_ref().unwrap().as_ref().map(|d| d.protocol), Some(GroupProtocol::Consumer));
    let classic = described[&offsets_only].as_ref().unwrap().as_ref().expect("a group with offsets exists");
    assert_eq!(
        (classic.state, classic.protocol, classic.members.len()),
        (GroupState::Empty, GroupProtocol::Classic, 0)
    );
    assert!(matches!(described[&unknown], Ok(None)), "{described:?}");
    println!("KIP-848 group: {described:?}; reader requests: {:?}", reader.request_counts());
    drop(consumer);
}

#[tokio::test]
async fn unknown_groups_are_none_and_missing_brokers_and_refused_groups_are_errors() {
    let kafka = broker().await;
    let bootstrap = kafka.bootstrap_servers();
    let reader = reader(&bootstrap);
    let unknown = testenv::unique_name("pg-unknown");
    let described = reader.describe_groups(std::slice::from_ref(&unknown), TIMEOUT).await;
    assert!(matches!(described[&unknown], Ok(None)), "{described:?}");

    // A group this client may not describe fails alone; the other group of the batch is read.
    let denied = testenv::unique_name("pg-denied");
    let allowed = testenv::unique_name("pg-allowed");
    let acl_kafka = kafka;
    tokio::task::spawn_blocking({
        let denied = denied.clone();
        move || {
            acl_kafka.add_acls(&["--deny-principal", "User:ANONYMOUS", "--operation", "Describe", "--group", &denied])
        }
    })
    .await
    .unwrap()
    .unwrap();
    let scopes = BTreeMap::from([(denied.clone(), vec![tp("t", 0)]), (allowed.clone(), vec![tp("t", 0)])]);
    let read = reader.committed_offsets(&scopes, TIMEOUT).await;
    assert!(matches!(&read[&denied], Err(KafkaError::Auth(m)) if m.contains("GroupAuthorizationFailed")), "{read:?}");
    assert_eq!(read[&allowed].as_ref().unwrap(), &BTreeMap::from([(tp("t", 0), None)]));

    let nothing = self::reader(&format!("127.0.0.1:{}", testenv::process::free_port()));
    let started = Instant::now();
    let timeout = Duration::from_secs(3);
    let read = nothing.committed_offsets(&scopes, timeout).await;
    let described = nothing.describe_groups(std::slice::from_ref(&unknown), timeout).await;
    assert!(started.elapsed() < 2 * timeout + Duration::from_secs(1), "took {:?}", started.elapsed());
    for error in [read[&denied].as_ref().unwrap_err(), described[&unknown].as_ref().unwrap_err()] {
        assert!(matches!(error, KafkaError::Unreachable(_) | KafkaError::Timeout(_)), "{error:?}");
    }
}

async fn secured_broker() -> &'static testenv::Kafka {
    tokio::task::spawn_blocking(testenv::shared_secured_kafka).await.unwrap()
}

fn with(bootstrap: &str, entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut properties = properties(bootstrap);
    properties.extend(entries.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    properties
}

fn path(path: std::path::PathBuf) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// `count` groups with commits on a fresh 3-partition topic, made over PLAINTEXT: group i commits
/// i * 10 + p on partition p, except partition i % 3, which stays uncommitted.
async fn committed_groups(
    kafka: &testenv::Kafka,
    count: usize,
) -> BTreeMap<String, BTreeMap<TopicPartition, Option<i64>>> {
    let client = client(&kafka.bootstrap_servers());
    let topic = testenv::unique_name("p-secured");
    client.create_topic(&topic, 3, 1, TIMEOUT).await.unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..count {
        let group = testenv::unique_name("pg-secured");
        let offsets: BTreeMap<TopicPartition, Option<i64>> =
            (0..3).map(|p| (tp(&topic, p), (p as usize != i % 3).then_some((i * 10) as i64 + p as i64))).collect();
        let commits: BTreeMap<TopicPartition, i64> =
            offsets.iter().filter_map(|(t, o)| o.map(|o| (t.clone(), o))).collect();
        // The broker learns of a topic just created a moment after CreateTopics answers, and
        // refuses commits to it (UnknownTopicOrPartition) until then.
        common::eventually(TIMEOUT, || async {
            client.alter_consumer_group_offsets(&group, &commits, TIMEOUT).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("{group}'s commits to {topic} were refused for {TIMEOUT:?}"));
        expected.insert(group, offsets);
    }
    expected
}

fn scopes(expected: &BTreeMap<String, BTreeMap<TopicPartition, Option<i64>>>) -> BTreeMap<String, Vec<TopicPartition>> {
    expected.iter().map(|(group, offsets)| (group.clone(), offsets.keys().cloned().collect())).collect()
}

/// Reads `expected`'s groups with a reader built from `properties`: the offsets must be the
/// commits and what librdkafka reads over the same listener with the same properties, and each
/// group (offsets, no members) must be described as Empty, an unknown one as None. Returns the
/// reader's request counts.
async fn reads_as_librdkafka(
    properties: &BTreeMap<String, String>,
    expected: &BTreeMap<String, BTreeMap<TopicPartition, Option<i64>>>,
) -> BTreeMap<String, i64> {
    let reader = GroupReader::new(properties).unwrap_or_else(|e| panic!("{e}"));
    let read = reader.committed_offsets(&scopes(expected), TIMEOUT).await;
    let librdkafka = KafkaClient::new(properties).unwrap_or_else(|e| panic!("{e}"));
    for (group, offsets) in expected {
        let ours = read[group].as_ref().unwrap_or_else(|e| panic!("{group}: {e}"));
        assert_eq!(ours, offsets, "{group}");
        let scope: Vec<TopicPartition> = offsets.keys().cloned().collect();
        let theirs = librdkafka.list_consumer_group_offsets(group, Some(&scope), TIMEOUT).await;
        assert_eq!(ours, &theirs.unwrap_or_else(|e| panic!("librdkafka, {group}: {e}")), "{group}");
    }
    let unknown = testenv::unique_name("pg-unknown");
    let mut groups: Vec<String> = expected.keys().cloned().collect();
    groups.push(unknown.clone());
    let described = reader.describe_groups(&groups, TIMEOUT).await;
    for group in expected.keys() {
        let description = described[group].as_ref().unwrap_or_else(|e| panic!("{group}: {e}"));
        let description = description.as_ref().unwrap_or_else(|| panic!("{group} is known"));
        assert_eq!(
            (description.state, description.protocol, description.members.len()),
            (GroupState::Empty, GroupProtocol::Classic, 0),
            "{description:?}"
        );
    }
    assert!(matches!(described[&unknown], Ok(None)), "{described:?}");
    reader.request_counts()
}

/// The text of every group's error, which must all be authentication failures.
fn auth_errors<T: std::fmt::Debug>(results: &BTreeMap<String, Result<T, KafkaError>>) -> Vec<String> {
    results
        .values()
        .map(|result| match result {
            Err(error @ KafkaError::Auth(_)) => error.to_string(),
            other => panic!("an authentication failure expected: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn over_ssl_offsets_and_descriptions_match_librdkafka_with_the_ca_from_a_file_or_inline() {
    let kafka = secured_broker().await;
    let tls = kafka.secured();
    let expected = committed_groups(kafka, 3).await;
    let ca = path(tls.ca_pem_path());
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    for properties in [
        with(&tls.ssl_bootstrap_servers(), &[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]),
        with(&tls.ssl_bootstrap_servers(), &[("security.protocol", "ssl"), ("ssl.ca.pem", &ca_pem)]),
    ] {
        let requests = reads_as_librdkafka(&properties, &expected).await;
        // TLS adds no request: one connection, no SASL.
        assert_eq!(requests["ApiVersion"], 1, "{requests:?}");
        assert!(!requests.contains_key("SaslHandshake"), "{requests:?}");
    }
}

#[tokio::test]
async fn an_untrusted_ca_or_a_certificate_for_another_host_is_refused_and_none_skips_the_host_check() {
    let kafka = secured_broker().await;
    let tls = kafka.secured();
    let expected = committed_groups(kafka, 1).await;
    let (ca, untrusted) = (path(tls.ca_pem_path()), path(tls.untrusted_ca_pem_path()));
    let (certificate, key) = (path(tls.client_certificate_path()), path(tls.client_key_path()));

    let properties =
        with(&tls.ssl_bootstrap_servers(), &[("security.protocol", "SSL"), ("ssl.ca.location", &untrusted)]);
    let reader = GroupReader::new(&properties).unwrap();
    for text in auth_errors(&reader.committed_offsets(&scopes(&expected), TIMEOUT).await) {
        assert!(text.contains("not signed by a CA this client trusts") && text.contains("ssl.ca.location"), "{text}");
    }

    // The MTLS listener's certificate names localhost only: reached by IP address, it is refused,
    // unless the host check is off (the chain is still verified).
    let by_ip = |algorithm: &str| {
        with(
            &tls.mtls_bootstrap_servers_by_ip(),
            &[
                ("security.protocol", "SSL"),
                ("ssl.ca.location", &ca),
                ("ssl.certificate.location", &certificate),
                ("ssl.key.location", &key),
                ("ssl.endpoint.identification.algorithm", algorithm),
            ],
        )
    };
    let reader = GroupReader::new(&by_ip("https")).unwrap();
    for text in auth_errors(&reader.committed_offsets(&scopes(&expected), TIMEOUT).await) {
        assert!(text.contains("does not name the host") && !text.contains("127.0.0.1"), "{text}");
    }
    reads_as_librdkafka(&by_ip("none"), &expected).await;
    let mut untrusted_without_check = by_ip("none");
    untrusted_without_check.insert("ssl.ca.location".to_string(), untrusted);
    let reader = GroupReader::new(&untrusted_without_check).unwrap();
    for text in auth_errors(&reader.committed_offsets(&scopes(&expected), TIMEOUT).await) {
        assert!(text.contains("not signed by a CA this client trusts"), "{text}");
    }
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate_from_files_or_inline_and_without_one_is_refused() {
    let kafka = secured_broker().await;
    let tls = kafka.secured();
    let expected = committed_groups(kafka, 2).await;
    let ca = path(tls.ca_pem_path());
    let (certificate, key) = (path(tls.client_certificate_path()), path(tls.client_key_path()));
    let (certificate_pem, key_pem) =
        (std::fs::read_to_string(&certificate).unwrap(), std::fs::read_to_string(&key).unwrap());
    let bootstrap = tls.mtls_bootstrap_servers();
    for client_identity in [
        [("ssl.certificate.location", &certificate), ("ssl.key.location", &key)],
        [("ssl.certificate.pem", &certificate_pem), ("ssl.key.pem", &key_pem)],
    ] {
        let mut properties = with(&bootstrap, &[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]);
        properties.extend(client_identity.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        reads_as_librdkafka(&properties, &expected).await;
    }

    let anonymous = with(&bootstrap, &[("security.protocol", "SSL"), ("ssl.ca.location", &ca)]);
    let reader = GroupReader::new(&anonymous).unwrap();
    for text in auth_errors(&reader.committed_offsets(&scopes(&expected), TIMEOUT).await) {
        assert!(text.contains("ssl.certificate.location"), "{text}");
    }
}

const MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];

fn sasl(bootstrap: &str, mechanism: &str, user: &str, password: &str) -> BTreeMap<String, String> {
    with(
        bootstrap,
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", mechanism),
            ("sasl.username", user),
            ("sasl.password", password),
        ],
    )
}

#[tokio::test]
async fn sasl_scram_sha_256_scram_sha_512_and_plain_read_what_librdkafka_reads() {
    let kafka = secured_broker().await;
    let listeners = kafka.secured();
    let (user, password) = listeners.sasl_user();
    let expected = committed_groups(kafka, 3).await;
    for mechanism in MECHANISMS {
        let properties = sasl(&listeners.sasl_bootstrap_servers(), mechanism, user, password);
        let requests = reads_as_librdkafka(&properties, &expected).await;
        // One connection: one handshake, and SCRAM's two messages or PLAIN's one.
        let messages = if mechanism == "PLAIN" { 1 } else { 2 };
        assert_eq!(
            (requests["ApiVersion"], requests["SaslHandshake"], requests["SaslAuthenticate"]),
            (1, 1, messages),
            "{mechanism}: {requests:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_password_or_a_mechanism_the_listener_lacks_is_an_auth_error_that_shows_no_secret() {
    let kafka = secured_broker().await;
    let listeners = kafka.secured();
    let (user, password) = listeners.sasl_user();
    let expected = committed_groups(kafka, 2).await;
    let wrong = testenv::unique_name("wrong-password");
    for mechanism in MECHANISMS {
        let reader = GroupReader::new(&sasl(&listeners.sasl_bootstrap_servers(), mechanism, user, &wrong)).unwrap();
        let read = reader.committed_offsets(&scopes(&expected), TIMEOUT).await;
        let groups: Vec<String> = expected.keys().cloned().collect();
        let described = reader.describe_groups(&groups, TIMEOUT).await;
        for text in auth_errors(&read).into_iter().chain(auth_errors(&described)) {
            assert!(text.contains("refused SASL") && text.contains(mechanism), "{text}");
            assert!(!text.contains(&wrong) && !text.contains(password), "{mechanism}: a password shown: {text}");
        }
    }
    // The REAUTH listener enables SCRAM-SHA-256 only; the error says which it enables.
    let reader = GroupReader::new(&sasl(&listeners.reauth_bootstrap_servers(), "PLAIN", user, password)).unwrap();
    for text in auth_errors(&reader.committed_offsets(&scopes(&expected), TIMEOUT).await) {
        assert!(text.contains("enables SCRAM-SHA-256") && !text.contains(password), "{text}");
    }
}

#[tokio::test]
async fn gssapi_is_a_config_error_naming_sasl_mechanism_and_no_value() {
    let (user, password) = ("Zq9-user-not-shown", "Zq9-password-not-shown");
    for mechanism in ["GSSAPI", "OAUTHBEARER"] {
        let properties = sasl("127.0.0.1:9092", mechanism, user, password);
        let error = GroupReader::new(&properties).err().expect("refused");
        let text = error.to_string();
        assert!(matches!(error, KafkaError::Config(_)), "{error:?}");
        assert!(text.contains("sasl.mechanism") && text.contains("through librdkafka"), "{text}");
        assert!(!text.contains(mechanism) && !text.contains(user) && !text.contains(password), "{text}");
    }
}

#[tokio::test]
async fn a_sasl_session_with_a_lifetime_is_replaced_before_the_broker_closes_it() {
    let kafka = secured_broker().await;
    let listeners = kafka.secured();
    let (user, password) = listeners.sasl_user();
    let expected = committed_groups(kafka, 1).await;
    let reader =
        GroupReader::new(&sasl(&listeners.reauth_bootstrap_servers(), "SCRAM-SHA-256", user, password)).unwrap();
    let scopes = scopes(&expected);
    for round in 0..2 {
        let read = reader.committed_offsets(&scopes, TIMEOUT).await;
        for (group, offsets) in &expected {
            assert_eq!(read[group].as_ref().unwrap_or_else(|e| panic!("round {round}: {e}")), offsets);
        }
        if round == 0 {
            // Not a wait for a condition: the session must run out, which only time does.
            tokio::time::sleep(testenv::kafka::REAUTH_SESSION + Duration::from_millis(500)).await;
        }
    }
    // The second round opened and authenticated a new connection instead of sending on the old
    // one, which the broker would have closed.
    let requests = reader.request_counts();
    assert_eq!(
        (requests["ApiVersion"], requests["SaslHandshake"], requests["SaslAuthenticate"]),
        (2, 2, 4),
        "{requests:?}"
    );
}

#[tokio::test]
async fn offset_fetches_are_split_by_the_partitions_their_groups_read() {
    let kafka = broker().await;
    let bootstrap = kafka.bootstrap_servers();
    let client = client(&bootstrap);
    let topic = testenv::unique_name("p-batches");
    client.create_topic(&topic, 100, 1, TIMEOUT).await.unwrap();
    // 60 groups of 100 partitions: 6,000 partitions, over one request's budget of 5,000.
    let groups: Vec<String> = (0..60).map(|_| testenv::unique_name("pb")).collect();
    let committer = &groups[59];
    common::commit(&client, committer, &BTreeMap::from([(tp(&topic, 99), 42)])).await;
    let scopes: BTreeMap<String, BTreeMap<String, i32>> =
        groups.iter().map(|g| (g.clone(), BTreeMap::from([(topic.clone(), 100)]))).collect();
    const { assert!(60 * 100 > consumer_group_operator::kafka::protocol::OFFSET_FETCH_PARTITIONS) };

    let reader = reader(&bootstrap);
    // A first read finds the coordinators (and waits out any offsets partition still loading on a
    // fresh broker); the second one's requests are the split alone.
    let first = reader.committed_by_topic(&scopes, TIMEOUT).await;
    assert!(first.values().all(Result::is_ok), "{first:?}");
    let before = reader.request_counts();
    let read = reader.committed_by_topic(&scopes, TIMEOUT).await;
    assert_eq!(delta(&reader.request_counts(), &before), counts(&[("OffsetFetch", 2)]));
    assert_eq!(read.len(), 60);
    // Every group answered whole, whichever request carried it.
    let offsets = read[committer].as_ref().unwrap();
    assert_eq!(offsets[&topic].len(), 100);
    assert_eq!((offsets[&topic][99], offsets[&topic][0]), (Some(42), None));
    assert!(groups[..59].iter().all(|g| read[g].as_ref().unwrap()[&topic].iter().all(Option::is_none)));
}

/// What a fake broker answers to DescribeGroups.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// A frame that declares 1 GiB and brings nothing.
    HugeFrame,
    /// A group array that declares a million groups and holds none.
    MissingElements,
    /// One member whose 1 MB assignment names a 32 KB topic (240,000 partitions of it).
    LongTopicName,
    /// One member whose 1 MB assignment lists 250,000 partitions of a 249-byte topic.
    ManyPartitions,
    /// An answer to another request (its correlation id is off by one).
    WrongCorrelation,
    /// A frame of 100 bytes sent a byte every 200 ms.
    SlowDrip,
}

/// A TCP server speaking just enough of Kafka's protocol for the group reader (ApiVersions,
/// FindCoordinator v4 naming itself, DescribeGroups v0) that answers DescribeGroups as a hostile
/// or broken broker would. Runs until the test's runtime ends.
async fn fake_broker(group: &str, hostile: Hostile) -> String {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let group = group.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let group = group.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(request) = fake_kafka::read_frame(&mut stream).await else { return };
                    let api_key = i16::from_be_bytes([request[0], request[1]]);
                    let correlation = i32::from_be_bytes(request[4..8].try_into().unwrap());
                    let mut body = Vec::new();
                    match api_key {
                        18 => {
                            // ApiVersions v3 (header v0): no error, three APIs, no throttle.
                            body.extend(correlation.to_be_bytes());
                            body.extend(0i16.to_be_bytes());
                            body.push(4);
                            for (key, min, max) in [(18i16, 0i16, 3i16), (10, 4, 4), (15, 0, 0)] {
                                body.extend(key.to_be_bytes());
                                body.extend(min.to_be_bytes());
                                body.extend(max.to_be_bytes());
                                body.push(0);
                            }
                            body.extend(0i32.to_be_bytes());
                            body.push(0);
                        }
                        // This server coordinates the group.
                        10 => body = fake_kafka::find_coordinator_answer(&request, correlation, port),
                        _ => {
                            let answered = hostile_answer(hostile, correlation, &group);
                            match hostile {
                                Hostile::HugeFrame => {
                                    let _ = stream.write_all(&(1i32 << 30).to_be_bytes()).await;
                                    std::future::pending::<()>().await;
                                }
                                Hostile::SlowDrip => {
                                    let _ = stream.write_all(&100i32.to_be_bytes()).await;
                                    for byte in answered.iter().chain(std::iter::repeat(&0)).take(100) {
                                        if stream.write_all(&[*byte]).await.is_err() {
                                            return;
                                        }
                                        tokio::time::sleep(Duration::from_millis(200)).await;
                                    }
                                    return;
                                }
                                _ => body = answered,
                            }
                        }
                    }
                    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
                    frame.extend(body);
                    if stream.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("127.0.0.1:{port}")
}

/// A DescribeGroups v0 answer (header v0) as `hostile` says.
fn hostile_answer(hostile: Hostile, correlation: i32, group: &str) -> Vec<u8> {
    let group = group.as_bytes();
    match hostile {
        Hostile::MissingElements => {
            let mut body = correlation.to_be_bytes().to_vec();
            body.extend(1_000_000i32.to_be_bytes());
            body
        }
        Hostile::WrongCorrelation => fake_kafka::describe_groups_answer(0, correlation + 1, group, &[]),
        Hostile::LongTopicName => {
            fake_kafka::describe_groups_answer(0, correlation, group, &fake_kafka::assignment(&[b'x'; 32767], 240_000))
        }
        Hostile::ManyPartitions => {
            fake_kafka::describe_groups_answer(0, correlation, group, &fake_kafka::assignment(&[b'y'; 249], 250_000))
        }
        Hostile::HugeFrame | Hostile::SlowDrip => fake_kafka::describe_groups_answer(0, correlation, group, &[]),
    }
}

#[tokio::test]
async fn a_hostile_broker_gets_a_clear_error_and_bounded_memory_while_other_groups_are_read() {
    let kafka = broker().await;
    let real = client(&kafka.bootstrap_servers());
    let topic = testenv::unique_name("p-hostile");
    real.create_topic(&topic, 2, 1, TIMEOUT).await.unwrap();
    let served = testenv::unique_name("pg-served");
    let commits = BTreeMap::from([(tp(&topic, 0), 5i64), (tp(&topic, 1), 7)]);
    common::eventually(TIMEOUT, || async { real.alter_consumer_group_offsets(&served, &commits, TIMEOUT).await.ok() })
        .await
        .expect("commits to the real broker");
    let served_reader = reader(&kafka.bootstrap_servers());

    let (resident_before, _) = common::resident_and_peak();
    let cases = [
        (Hostile::HugeFrame, "over the 33554432 bytes accepted"),
        (Hostile::MissingElements, "could not be encoded or decoded"),
        (Hostile::LongTopicName, "names a topic of 32767 bytes"),
        (Hostile::ManyPartitions, "more than 50000 partitions"),
        (Hostile::WrongCorrelation, "with correlation id"),
        (Hostile::SlowDrip, "did not answer DescribeGroups in time"),
    ];
    let call_timeout = Duration::from_secs(3);
    for (hostile, expected) in cases {
        let group = testenv::unique_name("pg-hostile");
        let hostile_reader = reader(&fake_broker(&group, hostile).await);
        let started = Instant::now();
        let (mut answer, mut other) = tokio::join!(
            hostile_reader.describe_groups(std::slice::from_ref(&group), call_timeout),
            served_reader.describe_groups(std::slice::from_ref(&served), TIMEOUT),
        );
        let elapsed = started.elapsed();
        let error = match answer.remove(&group) {
            Some(Err(error)) => error.to_string(),
            unexpected => panic!("{hostile:?}: expected an error, got {unexpected:?}"),
        };
        println!("{hostile:?} after {elapsed:?}: {error}");
        assert!(error.contains(expected), "{hostile:?}: {error}");
        assert!(elapsed < call_timeout + Duration::from_secs(2), "{hostile:?} held the call for {elapsed:?}");
        match other.remove(&served) {
            Some(Ok(Some(description))) => assert_eq!(description.state, GroupState::Empty, "{hostile:?}"),
            unexpected => panic!("{hostile:?}: the real broker's group was not read beside it: {unexpected:?}"),
        }
    }
    let (_, peak) = common::resident_and_peak();
    // A 1 MB assignment decoded without bounds takes gigabytes (a topic name copied per
    // partition); the bounded decoder holds a few dozen megabytes at most.
    let grown = peak.saturating_sub(resident_before);
    assert!(grown < 128 << 20, "peak resident memory grew by {} MiB", grown >> 20);
    println!("peak resident memory grew by {} MiB over the hostile answers", grown >> 20);
}
