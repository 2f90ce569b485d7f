//! `kubectl consumergroup` (or `kubectl cg`): the day-two commands of people who would otherwise
//! reach for `kafka-consumer-groups`: list, lag, describe, reset with a previewed plan and
//! approval, rollback, pause and resume. The binary `kubectl-consumergroup` only calls [`main`].
//!
//! Every change goes through the operator's API: a reset is an OffsetReset created in DryRun,
//! shown, and switched to Execute on approval; pause is `spec.paused`. The only Kafka access is
//! `lag --live`, with the ConsumerGroup's own connection settings read with the user's
//! credentials.

mod cli;
mod describe;
mod lag;
mod list;
mod output;
mod reset;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

pub use cli::{Cli, Command};

use crate::crd::{ConsumerGroup, OffsetReset, ResetPhase};

/// The field manager of the plugin's writes (visible in managedFields: who changed what).
const MANAGER: &str = "kubectl-consumergroup";

/// Exit codes besides 0 (done) and 2 (a usage error, from clap).
pub mod exit {
    /// An error, or an OffsetReset that failed.
    pub const FAILED: u8 = 1;
    /// The plan was shown and not approved.
    pub const DECLINED: u8 = 3;
    /// The operator did not get there before `--timeout`.
    pub const TIMED_OUT: u8 = 4;
    /// Ctrl-C (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// Parses the command line (as `kubectl consumergroup` or `kubectl cg`, from the name it was
/// run under), runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let mut command = Cli::command().bin_name(invoked_as());
    let matches = command.get_matches_mut();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if let Err(error) = cli.validate(&mut command) {
        error.exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILED)
        }
    };
    // A prompt interrupted by Ctrl-C leaves a thread blocked on stdin: do not wait for it.
    runtime.shutdown_background();
    code
}

/// `kubectl consumergroup` when run as `kubectl-consumergroup`, `kubectl cg` as `kubectl-cg`:
/// what the user typed, for usage lines.
fn invoked_as() -> String {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let file = std::path::Path::new(&argv0).file_name().map(|f| f.to_string_lossy().into_owned());
    match file.as_deref().and_then(|f| f.strip_prefix("kubectl-")) {
        Some(plugin) => format!("kubectl {plugin}"),
        None => "kubectl consumergroup".to_string(),
    }
}

/// A connected client and the namespace commands act in.
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

async fn connect(cli: &Cli) -> anyhow::Result<Cluster> {
    let options = KubeConfigOptions { context: cli.context.clone(), ..KubeConfigOptions::default() };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .context("cannot load the kubeconfig (set --kubeconfig or KUBECONFIG, and --context if needed)")?;
    let namespace = cli.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("cannot build a Kubernetes client from the kubeconfig")?;
    Ok(Cluster { client, namespace })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cluster = connect(&cli).await?;
    let format = cli.output;
    match cli.command {
        Command::List(args) => list::run(&cluster, args.all_namespaces, format).await,
        Command::Lag(args) => lag::run(&cluster, args, format).await,
        Command::Describe(args) => describe::run(&cluster, &args.name, format).await,
        Command::Reset(args) => reset::reset(&cluster, args, format).await,
        Command::Rollback(args) => reset::rollback(&cluster, args, format).await,
        Command::Pause(args) => set_paused(&cluster, &args.name, true, format).await,
        Command::Resume(args) => set_paused(&cluster, &args.name, false, format).await,
    }
}

/// The ConsumerGroup `name`, or an error that says where it was looked for and what to do.
async fn get_group(cluster: &Cluster, name: &str) -> anyhow::Result<ConsumerGroup> {
    let groups: Api<ConsumerGroup> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    match groups.get_opt(name).await.map_err(|e| api_error(e, "ConsumerGroups"))? {
        Some(group) => Ok(group),
        None => anyhow::bail!(
            "ConsumerGroup {name:?} not found in namespace {:?}; `kubectl consumergroup list -A` shows them all, -n picks the namespace",
            cluster.namespace
        ),
    }
}

/// An API error in words, with what to do for the usual causes.
fn api_error(error: kube::Error, what: &str) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.code == 404 => anyhow::anyhow!(
            "the apiserver does not know {what} ({}): the operator's CRDs are not installed in this cluster; install them with `consumer-group-operator crd | kubectl apply --server-side -f -` or the Helm chart",
            status.message
        ),
        kube::Error::Api(status) if status.code == 403 => {
            anyhow::anyhow!(
                "forbidden: {}; ask for that permission (kubectl auth can-i shows what you may do)",
                status.message
            )
        }
        _ => anyhow::Error::new(error).context(format!("request about {what} failed")),
    }
}

/// `pause` and `resume`: sets spec.paused, which freezes the workload's replicas (the operator
/// keeps observing and reporting).
async fn set_paused(
    cluster: &Cluster,
    name: &str,
    paused: bool,
    format: Option<output::Format>,
) -> anyhow::Result<ExitCode> {
    let group = get_group(cluster, name).await?;
    let groups: Api<ConsumerGroup> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let verb = if paused { "paused" } else { "resumed" };
    let updated = if group.spec.paused == paused {
        eprintln!("consumergroup/{name} is already {}", if paused { "paused" } else { "not paused" });
        group
    } else {
        let patch = serde_json::json!({"spec": {"paused": paused}});
        let params = PatchParams { field_manager: Some(MANAGER.into()), ..PatchParams::default() };
        groups.patch(name, &params, &Patch::Merge(patch)).await.map_err(|e| api_error(e, "ConsumerGroups"))?
    };
    if let Some(format) = format {
        output::print_object(&updated, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let replicas = updated.status.as_ref().and_then(|s| s.replicas).map_or("unknown".to_string(), |r| r.to_string());
    if paused {
        println!(
            "consumergroup/{name} {verb}: its replicas stay at {replicas} (autoscaling, spec.replicas and kubectl scale are not applied; consumers keep running); `kubectl consumergroup resume {name}` undoes it"
        );
        // A reset already holding the workload at zero keeps it there until the pause ends.
        let resets: Api<OffsetReset> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
        let running = resets.list(&Default::default()).await.map_err(|e| api_error(e, "OffsetResets"))?;
        for reset in running.items.iter().filter(|r| r.spec.consumer_group == name) {
            if reset.status.as_ref().and_then(|s| s.phase).is_some_and(ResetPhase::holds_workload) {
                eprintln!(
                    "warning: OffsetReset {} is running and holds the workload at zero; it stays at zero until the group is resumed",
                    reset.name_any()
                );
            }
        }
    } else {
        println!("consumergroup/{name} {verb}: the operator applies its replica decisions again");
    }
    Ok(ExitCode::SUCCESS)
}
