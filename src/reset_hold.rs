//! What OffsetResets mean for their ConsumerGroup's workload: whether one holds it at zero, and
//! the replicas to resume to once one ended. Read by the ConsumerGroup controller (which holds
//! and releases the workload) and the OffsetReset controller (which skips settled resets), so
//! neither imports the other.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::Store;

use crate::crd::{ConsumerGroup, OffsetReset, ResetMode, ResetPhase};

/// What the resets of a ConsumerGroup mean for its workload now.
#[derive(Debug, Default, PartialEq)]
pub struct ResetHold {
    /// The reset holding the workload at zero.
    pub holding: Option<String>,
    /// The replicas the most recently finished reset stopped (to resume to).
    pub released_replicas: Option<i32>,
}

/// The resets of `group` as they are now: each reset the cache shows unsettled is read again,
/// since the cache may not show the reset controller's last phase write yet (a reset that just
/// started quiescing would otherwise leave the workload running until a later reconcile, and one
/// that just ended would not be resumed from). No request while no reset of the group is under way.
pub async fn hold_now(
    client: &kube::Client,
    resets: &[Store<OffsetReset>],
    group: &ConsumerGroup,
) -> Result<ResetHold, kube::Error> {
    let namespace = group.namespace();
    let (under_way, mut known): (Vec<Arc<OffsetReset>>, Vec<Arc<OffsetReset>>) = resets
        .iter()
        .flat_map(|store| store.state())
        .filter(|r| r.namespace() == namespace && r.spec.consumer_group == group.name_any())
        .partition(|r| !settled(r));
    let api: Api<OffsetReset> = Api::namespaced(client.clone(), &namespace.unwrap_or_default());
    let mut holding = None;
    for reset in under_way {
        let Some(fresh) = api.get_opt(&reset.name_any()).await? else { continue };
        if holding.is_none() && fresh.status.as_ref().and_then(|s| s.phase).is_some_and(ResetPhase::holds_workload) {
            holding = Some(fresh.name_any());
        }
        known.push(Arc::new(fresh));
    }
    Ok(ResetHold { holding, released_replicas: released_replicas(&known) })
}

/// The replicas the most recently finished of `resets` stopped.
fn released_replicas(resets: &[Arc<OffsetReset>]) -> Option<i32> {
    resets
        .iter()
        .filter_map(|r| r.status.as_ref())
        .filter(|s| matches!(s.phase, Some(ResetPhase::Succeeded | ResetPhase::Failed)))
        .filter_map(|s| Some((s.completed_at.clone()?, s.previous_replicas?)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, replicas)| replicas)
}

/// Whether nothing is left to do for this object as it is.
pub fn settled(reset: &OffsetReset) -> bool {
    let status = reset.status.as_ref();
    match status.and_then(|s| s.phase) {
        Some(ResetPhase::Succeeded | ResetPhase::Failed) => true,
        // A DryRun is planned again when its spec changed (e.g. spec.topics).
        Some(ResetPhase::Planned) => {
            reset.spec.mode == ResetMode::DryRun
                && status.and_then(|s| s.observed_generation) == reset.metadata.generation
        }
        _ => false,
    }
}
