//! Child processes that cannot outlive the test process.
//!
//! Every server is spawned with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test binary even
//! when a test panics or the binary is killed. The kernel ties that signal to the *thread* that
//! forked, not the process, so all forks happen on one dedicated thread that lives as long as the
//! process (test threads come and go).

use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};
use std::thread;

type SpawnRequest = (Command, Sender<io::Result<Child>>);

fn spawner() -> &'static std::sync::Mutex<Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<std::sync::Mutex<Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            // A parent may block SIGINT/SIGTERM to sigwait on them; servers must not
                            // inherit that mask.
                            let mut empty: libc::sigset_t = std::mem::zeroed();
                            libc::sigemptyset(&mut empty);
                            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawn the testenv spawner thread");
        std::sync::Mutex::new(tx)
    })
}

/// A server process that is killed when this guard drops, or when the test process dies.
#[derive(Debug)]
pub struct Guarded {
    child: Option<Child>,
    name: String,
}

impl Guarded {
    pub fn spawn(name: &str, command: Command) -> io::Result<Guarded> {
        let (tx, rx) = channel();
        spawner()
            .lock()
            .expect("spawner lock")
            .send((command, tx))
            .map_err(|_| io::Error::other("spawner thread is gone"))?;
        let child = rx.recv().map_err(|_| io::Error::other("spawner thread is gone"))??;
        Ok(Guarded { child: Some(child), name: name.to_string() })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and so will never become ready).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends a signal without waiting (e.g. SIGSTOP to freeze a server in a test).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain syscall on a pid we own.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Kills the process and reaps it, through a shared reference (the guard stays, empty-handed
    /// in effect: a later kill finds the process gone).
    pub fn kill_now(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain syscalls on a child we own; waitpid reaps it.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the process to stop with SIGTERM, and kills it if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        let Some(mut child) = self.child.take() else { return };
        self.child = None;
        // SAFETY: plain syscall on a pid we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(std::time::Duration::from_millis(50));
        }
        eprintln!("[testenv] {} did not stop within {grace:?}; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.
///
/// A port from `bind(0)` is an ephemeral one: between this call and the server binding it, the
/// kernel may hand it to any outgoing connection as its source port (kube-apiserver opens dozens
/// to etcd while the broker starts), and the server then fails with "Address already in use".
/// Ports below the range are never handed out that way; they are picked at random and checked.
pub fn free_port() -> u16 {
    let (low, high) = (LOWEST_PORT, ephemeral_range_start().max(LOWEST_PORT + 1));
    for attempt in 0..200u64 {
        let port = low + (random_u64(attempt) % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Lowest port [`free_port`] picks: well above the ports system services use.
const LOWEST_PORT: u16 = 10_000;

/// First port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
}

/// A different number at each call, from std's per-process random hash keys and a counter (no
/// dependency for a port pick).
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u64(salt);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// SIGINT and SIGTERM, blocked in the calling thread and every thread it starts afterwards, so
/// that only [`StopSignals::wait`] receives them. Call before any thread starts.
pub struct StopSignals(libc::sigset_t);

impl StopSignals {
    pub fn block() -> StopSignals {
        // SAFETY: sigset manipulation on a local set, then masking the calling thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            StopSignals(set)
        }
    }

    /// Returns once SIGINT or SIGTERM arrives.
    pub fn wait(&self) {
        let mut signal = 0;
        // SAFETY: waits on the set blocked in `block`.
        unsafe {
            libc::sigwait(&self.0, &mut signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_spread() {
        let ports: std::collections::BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
        assert!(ports.iter().all(|&p| (LOWEST_PORT..ephemeral_range_start()).contains(&p)), "{ports:?}");
        assert!(ports.len() >= 45, "picked at random, not one after another: {ports:?}");
        assert!(ports.iter().all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok()), "{ports:?}");
    }
}
