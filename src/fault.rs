//! Fault injection for the crash and supervision tests, compiled only with the `fault-injection`
//! feature (which only the tests enable): a release build has none of these hooks.

/// When `CGO_FAULT_EXIT_AT` names `point`, the process exits there, as if killed. Points:
/// `plan-stored` (a reset's Committing written, nothing committed yet) and `committed` (offsets
/// committed, Succeeded not yet written).
#[cfg(feature = "fault-injection")]
pub fn exit_point(point: &str) {
    if std::env::var("CGO_FAULT_EXIT_AT").is_ok_and(|p| p == point) {
        tracing::error!(point, "fault injection: exiting");
        std::process::exit(86);
    }
}

#[cfg(not(feature = "fault-injection"))]
pub fn exit_point(_point: &str) {}

/// When `CGO_FAULT_PANIC_ONCE_AT` names `point`, the first task to reach it panics there. Points:
/// `observer-poll` (a Kafka observer's polling task).
#[cfg(feature = "fault-injection")]
pub fn panic_once_point(point: &str) {
    static PANICKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("CGO_FAULT_PANIC_ONCE_AT").is_ok_and(|p| p == point)
        && !PANICKED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        panic!("fault injection: panic at {point}");
    }
}

#[cfg(not(feature = "fault-injection"))]
pub fn panic_once_point(_point: &str) {}

/// When `CGO_FAULT_PAUSE_AT` is `point:milliseconds`, every task reaching `point` waits that long
/// there (logging `subject`), so a test can change what the task read before it writes. Points:
/// `workload-write` (a replica write to an existing workload, after it was read);
/// `reset-cache`, `group-cache`, `connection-cache` (each event of that controller's cache, which
/// then lags the apiserver).
#[cfg(feature = "fault-injection")]
pub async fn pause_point(point: &str, subject: &str) {
    let Ok(spec) = std::env::var("CGO_FAULT_PAUSE_AT") else { return };
    if let Some((at, millis)) = spec.split_once(':')
        && at == point
        && let Ok(millis) = millis.parse::<u64>()
    {
        tracing::info!(point, subject, millis, "fault injection: pausing");
        tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    }
}

#[cfg(not(feature = "fault-injection"))]
pub async fn pause_point(_point: &str, _subject: &str) {}
