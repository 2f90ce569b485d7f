//! `reset` and `rollback`: an OffsetReset is created in DryRun, its plan is shown as a diff table,
//! and only an approval (typed, or `--yes`) switches it to Execute; the phases are then followed
//! until Succeeded or Failed, which the exit code tells. A plan that is declined, cannot be made
//! or is not ready in time is deleted again: only `--dry-run` leaves an OffsetReset in DryRun, for
//! approval later.
//!
//! The plan shown is the operator's preview on the live group. The approval is conditional on the
//! OffsetReset being unchanged since it was shown (its resourceVersion), so what was approved is
//! what runs; the operator resolves it again once the consumers are stopped, and a final plan
//! that differs from the preview (the group committed meanwhile) is shown after the run.
//!
//! Ctrl-C before the approval deletes the DryRun; after it, only the following stops: an
//! executing reset is the operator's to finish.

use std::future::Future;
use std::io::{IsTerminal, Write as _};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use super::cli::{FlowArgs, ResetArgs, RollbackArgs};
use super::output::{Format, print_object, table};
use super::{Cluster, MANAGER, api_error, exit, get_group};
use crate::crd::{
    ConsumerGroup, OffsetReset, OffsetResetSpec, PlannedOffset, ResetMode, ResetPhase, ResetTarget, TopicScope,
};

/// How often the OffsetReset is read while waiting on the operator.
const POLL: Duration = Duration::from_millis(500);

pub async fn reset(cluster: &Cluster, args: ResetArgs, format: Option<Format>) -> anyhow::Result<ExitCode> {
    let group = get_group(cluster, &args.name).await?;
    let target = ResetTarget {
        to_earliest: args.to_earliest.then_some(true),
        to_latest: args.to_latest.then_some(true),
        to_current: args.to_current.then_some(true),
        to_datetime: args.to_datetime.clone(),
        by_duration: args.by_duration.clone(),
        shift_by: args.shift_by,
        to_offset: args.to_offset,
        offsets: args.from_file.as_ref().map(|file| file.0.clone()),
        delete_offsets: args.delete_offsets.then_some(true),
        rollback_of: None,
    };
    // A file's partitions are its scope, as with kafka-consumer-groups --from-file.
    let topics = match &args.from_file {
        Some(file) => {
            let mut scopes: Vec<TopicScope> = Vec::new();
            for offset in &file.0 {
                match scopes.iter_mut().find(|s| s.name == offset.topic) {
                    Some(scope) => scope.partitions.push(offset.partition),
                    None => scopes.push(TopicScope { name: offset.topic.clone(), partitions: vec![offset.partition] }),
                }
            }
            scopes
        }
        None => args.topic.clone(),
    };
    let spec = spec(&group.name_any(), target, topics, &args.flow)?;
    run(cluster, &group, format!("{}-reset-", group.name_any()), spec, &args.flow, format).await
}

pub async fn rollback(cluster: &Cluster, args: RollbackArgs, format: Option<Format>) -> anyhow::Result<ExitCode> {
    let api: Api<OffsetReset> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let name = &args.reset;
    let Some(earlier) = api.get_opt(name).await.map_err(|e| api_error(e, "OffsetResets"))? else {
        anyhow::bail!(
            "OffsetReset {name:?} not found in namespace {:?}; `kubectl consumergroup describe GROUP` lists a group's resets",
            cluster.namespace
        );
    };
    let phase = earlier.status.as_ref().and_then(|s| s.phase);
    if phase != Some(ResetPhase::Succeeded) {
        anyhow::bail!(
            "OffsetReset {name} is {}, not Succeeded: only an executed reset changed offsets, so only that can be rolled back",
            phase.map_or("not started".to_string(), |p| format!("{p:?}"))
        );
    }
    let group = get_group(cluster, &earlier.spec.consumer_group).await?;
    let target = ResetTarget { rollback_of: Some(name.clone()), ..ResetTarget::default() };
    // The scope of the reset being undone: its plan's partitions are all inside it.
    let spec = spec(&group.name_any(), target, earlier.spec.topics.clone(), &args.flow)?;
    run(cluster, &group, format!("{name}-rollback-"), spec, &args.flow, format).await
}

/// A DryRun spec; fields not given keep the CRD's defaults.
fn spec(group: &str, target: ResetTarget, topics: Vec<TopicScope>, flow: &FlowArgs) -> anyhow::Result<OffsetResetSpec> {
    let mut spec: OffsetResetSpec =
        serde_json::from_value(serde_json::json!({"consumerGroup": group, "target": target, "topics": topics}))?;
    if let Some(seconds) = flow.quiesce_timeout_seconds {
        spec.quiesce_timeout_seconds = seconds;
    }
    if let Some(seconds) = flow.session_timeout_seconds {
        spec.session_timeout_seconds = seconds;
    }
    Ok(spec)
}

/// Creates the DryRun, shows its plan, asks for the approval and follows the execution; each step
/// either goes on or ends the command with its exit code.
async fn run(
    cluster: &Cluster,
    group: &ConsumerGroup,
    generate_name: String,
    spec: OffsetResetSpec,
    flow: &FlowArgs,
    format: Option<Format>,
) -> anyhow::Result<ExitCode> {
    let api: Api<OffsetReset> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let object = OffsetReset {
        metadata: ObjectMeta { generate_name: Some(generate_name), ..ObjectMeta::default() },
        spec,
        status: None,
    };
    let post = PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() };
    let created = api.create(&post, &object).await.map_err(|e| api_error(e, "OffsetResets"))?;
    let name = created.name_any();
    eprintln!("offsetreset/{name} created in DryRun; waiting for its plan");
    let timeout = Duration::from_secs(flow.timeout);

    let planned = match wait_for_plan(cluster, &api, &name, timeout).await? {
        ControlFlow::Continue(planned) => planned,
        ControlFlow::Break(code) => return Ok(code),
    };
    let preview = planned.status.clone().unwrap_or_default().plan;
    if let ControlFlow::Break(code) = show_plan(&api, &planned, flow, format).await? {
        return Ok(code);
    }
    if let ControlFlow::Break(code) = approve(&api, group, &planned, flow).await? {
        return Ok(code);
    }
    match follow_execution(&api, &name, &group.name_any(), timeout).await? {
        ControlFlow::Continue(finished) => Ok(report(&finished, &preview, format)),
        ControlFlow::Break(code) => Ok(code),
    }
}

/// Waits for the operator's plan of the DryRun; one that cannot be made or does not come in time
/// is deleted.
async fn wait_for_plan(
    cluster: &Cluster,
    api: &Api<OffsetReset>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<ControlFlow<ExitCode, OffsetReset>> {
    let planned = follow(api, name, timeout, |reset| {
        let status = reset.status.as_ref();
        matches!(status.and_then(|s| s.phase), Some(ResetPhase::Planned | ResetPhase::Failed))
            && status.and_then(|s| s.observed_generation) == reset.metadata.generation
    });
    let planned = match before_approval(api, name, planned).await? {
        None => return Ok(ControlFlow::Break(ExitCode::from(exit::INTERRUPTED))),
        Some(Ok(planned)) => planned,
        Some(Err(last)) => {
            let why = last.status.and_then(|s| s.message).unwrap_or_else(|| {
                format!(
                    "the operator did not answer: is consumer-group-operator running and watching namespace {}?",
                    cluster.namespace
                )
            });
            eprintln!("no plan within {}s: {why}", timeout.as_secs());
            delete(api, name).await;
            return Ok(ControlFlow::Break(ExitCode::from(exit::TIMED_OUT)));
        }
    };
    let status = planned.status.clone().unwrap_or_default();
    if status.phase == Some(ResetPhase::Failed) {
        eprintln!("the reset cannot be planned: {}", status.message.unwrap_or_default());
        delete(api, name).await;
        return Ok(ControlFlow::Break(ExitCode::from(exit::FAILED)));
    }
    Ok(ControlFlow::Continue(planned))
}

/// Prints the plan (and exports it); with --dry-run the command ends here, the DryRun kept.
async fn show_plan(
    api: &Api<OffsetReset>,
    planned: &OffsetReset,
    flow: &FlowArgs,
    format: Option<Format>,
) -> anyhow::Result<ControlFlow<ExitCode>> {
    let name = planned.name_any();
    let plan = planned.status.as_ref().map(|s| s.plan.as_slice()).unwrap_or_default();
    match format {
        Some(format) => print_object(planned, format)?,
        None => print!("{}", plan_text(plan)),
    }
    if let Some(path) = &flow.export {
        if let Err(error) = std::fs::write(path, export_csv(plan)) {
            delete(api, &name).await;
            anyhow::bail!("cannot write the plan to {}: {error}", path.display());
        }
        eprintln!("plan written to {} (kafka-consumer-groups --reset-offsets --from-file reads it)", path.display());
    }
    if flow.dry_run {
        eprintln!(
            "offsetreset/{name} stays in DryRun; approve it later with `kubectl patch offsetreset {name} --type merge -p '{{\"spec\":{{\"mode\":\"Execute\"}}}}'`, or delete it"
        );
        return Ok(ControlFlow::Break(ExitCode::SUCCESS));
    }
    Ok(ControlFlow::Continue(()))
}

/// Says what executing does, asks (unless --yes) and switches the DryRun to Execute, conditional
/// on the version that was shown: an edit since then is not approved with it.
async fn approve(
    api: &Api<OffsetReset>,
    group: &ConsumerGroup,
    planned: &OffsetReset,
    flow: &FlowArgs,
) -> anyhow::Result<ControlFlow<ExitCode>> {
    let (name, group_name) = (planned.name_any(), group.name_any());
    let status = planned.status.clone().unwrap_or_default();
    let members = match status.member_count.unwrap_or(0) {
        0 => "no members now".to_string(),
        count => {
            let names: Vec<String> = status.members.iter().map(|m| format!("{} ({})", m.client_id, m.host)).collect();
            format!("{count} member(s) now: {}", names.join(", "))
        }
    };
    eprintln!(
        "Executing stops the consumers of consumergroup/{group_name} ({members}), waits for the group to be empty, resolves the plan again on the stopped group, commits it and restarts them."
    );
    if group.spec.paused {
        eprintln!(
            "consumergroup/{group_name} is paused: once approved, the reset waits (Pending) until `kubectl consumergroup resume {group_name}`"
        );
    }
    if !flow.yes {
        match before_approval(api, &name, approved(&name)).await? {
            Some(true) => {}
            Some(false) => {
                delete(api, &name).await;
                return Ok(ControlFlow::Break(ExitCode::from(exit::DECLINED)));
            }
            None => return Ok(ControlFlow::Break(ExitCode::from(exit::INTERRUPTED))),
        }
    }
    let approve = serde_json::json!({
        "metadata": {"resourceVersion": planned.resource_version()},
        "spec": {"mode": ResetMode::Execute},
    });
    let patch = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
    match api.patch(&name, &patch, &Patch::Merge(approve)).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => anyhow::bail!(
            "offsetreset/{name} changed after its plan was shown, so it was not executed; look at it with `kubectl get offsetreset {name} -o yaml`, or run the command again"
        ),
        Err(error) => return Err(api_error(error, "OffsetResets")),
    }
    eprintln!("offsetreset/{name} approved: executing");
    Ok(ControlFlow::Continue(()))
}

/// Follows the approved reset until it ends; Ctrl-C or the timeout stop only the following.
async fn follow_execution(
    api: &Api<OffsetReset>,
    name: &str,
    group_name: &str,
    timeout: Duration,
) -> anyhow::Result<ControlFlow<ExitCode, OffsetReset>> {
    let done = follow(api, name, timeout, |reset| {
        matches!(reset.status.as_ref().and_then(|s| s.phase), Some(ResetPhase::Succeeded | ResetPhase::Failed))
    });
    let done = tokio::select! {
        done = done => done?,
        Ok(()) = tokio::signal::ctrl_c() => {
            eprintln!(
                "\nstopped following offsetreset/{name}: an approved reset goes on in the cluster; `kubectl consumergroup describe {group_name}` shows it"
            );
            return Ok(ControlFlow::Break(ExitCode::from(exit::INTERRUPTED)));
        }
    };
    match done {
        Ok(finished) => Ok(ControlFlow::Continue(finished)),
        Err(last) => {
            let status = last.status.unwrap_or_default();
            eprintln!(
                "offsetreset/{name} is still {} after {}s ({}); it goes on in the cluster: follow it with `kubectl consumergroup describe {group_name}`",
                status.phase.map_or("not started".to_string(), |p| format!("{p:?}")),
                timeout.as_secs(),
                status.message.unwrap_or_default()
            );
            Ok(ControlFlow::Break(ExitCode::from(exit::TIMED_OUT)))
        }
    }
}

/// The outcome, and the committed plan where it differs from the preview.
fn report(finished: &OffsetReset, preview: &[PlannedOffset], format: Option<Format>) -> ExitCode {
    let name = finished.name_any();
    let status = finished.status.clone().unwrap_or_default();
    let message = status.message.clone().unwrap_or_default();
    if status.phase != Some(ResetPhase::Succeeded) {
        eprintln!("offsetreset/{name} Failed: {message}");
        return ExitCode::from(exit::FAILED);
    }
    if status.plan != preview && format.is_none() {
        println!(
            "\nThe plan resolved on the stopped group differs from the preview (the group moved meanwhile); committed:"
        );
        print!("{}", plan_text(&status.plan));
    }
    eprintln!("offsetreset/{name} Succeeded: {message}");
    ExitCode::SUCCESS
}

/// Runs a step before the approval; Ctrl-C during it deletes the DryRun (nothing ran) and gives
/// None.
async fn before_approval<T>(
    api: &Api<OffsetReset>,
    name: &str,
    step: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        result = step => result.map(Some),
        Ok(()) = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted before approval: nothing was executed");
            delete(api, name).await;
            Ok(None)
        }
    }
}

/// Reads the OffsetReset every [`POLL`] until `done` holds (Ok) or `timeout` passes (Err with the
/// last version), drawing the phases on the way as a progress line on stderr.
async fn follow(
    api: &Api<OffsetReset>,
    name: &str,
    timeout: Duration,
    done: impl Fn(&OffsetReset) -> bool,
) -> anyhow::Result<Result<OffsetReset, OffsetReset>> {
    let mut progress = Progress::new();
    let deadline = Instant::now() + timeout;
    loop {
        let Some(reset) = api.get_opt(name).await.map_err(|e| api_error(e, "OffsetResets"))? else {
            progress.finish();
            anyhow::bail!("offsetreset/{name} was deleted while it was being followed");
        };
        if done(&reset) {
            progress.finish();
            return Ok(Ok(reset));
        }
        progress.show(&reset);
        if Instant::now() >= deadline {
            progress.finish();
            return Ok(Err(reset));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One line redrawn in place on a terminal; elsewhere (a log, a test) a line per change.
struct Progress {
    terminal: bool,
    started: Instant,
    last: Option<String>,
}

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), started: Instant::now(), last: None }
    }

    fn show(&mut self, reset: &OffsetReset) {
        let status = reset.status.clone().unwrap_or_default();
        let text = match status.phase {
            // Approved, and the operator has not taken it up yet.
            Some(ResetPhase::Planned) if reset.spec.mode == ResetMode::Execute => {
                "approved; waiting for the operator to start".to_string()
            }
            Some(phase) => format!("{phase:?}: {}", status.message.unwrap_or_default()),
            None => "waiting for the operator".to_string(),
        };
        let elapsed = self.started.elapsed().as_secs();
        if self.terminal {
            let line: String = format!("[{elapsed:>4}s] {text}").chars().take(160).collect();
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if self.last.as_ref() != Some(&text) {
            eprintln!("[{elapsed:>4}s] {text}");
        }
        self.last = Some(text);
    }

    fn finish(&self) {
        if self.terminal && self.last.is_some() {
            eprintln!();
        }
    }
}

/// Asks on stderr and reads the answer from stdin; only `y` or `yes` approves.
async fn approved(name: &str) -> anyhow::Result<bool> {
    eprint!("Execute offsetreset/{name}? [y/N] ");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|read| (read, line))
    })
    .await??;
    let (read, line) = answer;
    if read == 0 {
        eprintln!("\nno answer (stdin is closed): not executed; --yes approves without asking");
        return Ok(false);
    }
    let yes = matches!(line.trim().to_lowercase().as_str(), "y" | "yes");
    if !yes {
        eprintln!("not approved: nothing was executed");
    }
    Ok(yes)
}

/// Deletes a DryRun the user will not run (declined, or no plan), saying so.
async fn delete(api: &Api<OffsetReset>, name: &str) {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => eprintln!("offsetreset/{name} deleted"),
        Err(error) => eprintln!("warning: offsetreset/{name} could not be deleted ({error}); delete it yourself"),
    }
}

/// The plan as a diff table with its totals.
fn plan_text(plan: &[PlannedOffset]) -> String {
    let number = |o: Option<i64>| o.map_or_else(|| "-".to_string(), |o| o.to_string());
    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|p| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                number(p.current_offset),
                p.new_offset.map_or_else(|| "(deleted)".to_string(), |o| o.to_string()),
                p.delta.map_or_else(|| "-".to_string(), |d| format!("{d:+}")),
            ]
        })
        .collect();
    let mut text = table(&["TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET", "DELTA"], &rows);
    text.push_str(&format!("\n{}\n", totals(plan)));
    text
}

/// "3 partitions: 12 messages to read again, 0 to skip; 1 unchanged" and the special cases.
fn totals(plan: &[PlannedOffset]) -> String {
    let back: i64 = plan.iter().filter_map(|p| p.delta).filter(|d| *d < 0).map(|d| -d).sum();
    let forward: i64 = plan.iter().filter_map(|p| p.delta).filter(|d| *d > 0).sum();
    let unchanged = plan.iter().filter(|p| p.delta == Some(0)).count();
    let delta: i64 = plan.iter().filter_map(|p| p.delta).sum();
    let mut text = format!(
        "Total: {} partitions, delta {delta:+}: {back} messages to read again, {forward} to skip; {unchanged} unchanged",
        plan.len()
    );
    let first = plan.iter().filter(|p| p.current_offset.is_none() && p.new_offset.is_some()).count();
    if first > 0 {
        text.push_str(&format!("; {first} get their first committed offset"));
    }
    let deleted = plan.iter().filter(|p| p.new_offset.is_none()).count();
    if deleted > 0 {
        text.push_str(&format!(
            "; {deleted} committed offsets deleted (consumers then start where auto.offset.reset says)"
        ));
    }
    text
}

/// `topic,partition,offset` lines, as kafka-consumer-groups --export writes and --from-file reads.
fn export_csv(plan: &[PlannedOffset]) -> String {
    plan.iter().filter_map(|p| Some(format!("{},{},{}\n", p.topic, p.partition, p.new_offset?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(partition: i32, current: Option<i64>, new: Option<i64>) -> PlannedOffset {
        let delta = current.zip(new).map(|(c, n)| n - c);
        PlannedOffset { topic: "t".into(), partition, current_offset: current, new_offset: new, delta }
    }

    #[test]
    fn totals_count_replayed_skipped_and_special_partitions() {
        let plan = [planned(0, Some(8), Some(4)), planned(1, Some(5), Some(7)), planned(2, Some(3), Some(3))];
        assert_eq!(totals(&plan), "Total: 3 partitions, delta -2: 4 messages to read again, 2 to skip; 1 unchanged");
        let plan = [planned(0, None, Some(4)), planned(1, Some(5), None)];
        assert_eq!(
            totals(&plan),
            "Total: 2 partitions, delta +0: 0 messages to read again, 0 to skip; 0 unchanged; 1 get their first committed offset; 1 committed offsets deleted (consumers then start where auto.offset.reset says)"
        );
    }

    #[test]
    fn the_export_is_the_tools_csv_without_deletions() {
        let plan = [planned(0, Some(8), Some(4)), planned(1, Some(5), None)];
        assert_eq!(export_csv(&plan), "t,0,4\n");
    }
}
