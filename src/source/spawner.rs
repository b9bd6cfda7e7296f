//! Every child process of the gateway is forked here, from one thread that lives as long as
//! the process, so a child lives exactly as long as the gateway.
//!
//! Why a thread of its own: a child must not outlive a gateway that was SIGKILLed (a
//! `probe-rs` left running holds the debug probe, and the next gateway cannot attach), so it
//! asks Linux for `PR_SET_PDEATHSIG`. But that signal is sent when the *thread* that forked
//! the child exits, not when the process does. A tokio worker thread is not forever:
//! `block_in_place` hands its role to a new thread, and an idle pool thread exits after its
//! keep-alive (10 s). A child forked from a worker was therefore SIGTERMed by a gateway that
//! was alive and well, and a restarted `probe-rs` re-flashes and resets the board. The thread
//! here never exits while the process lives (it waits on a channel whose sender is a static),
//! so the parent-death signal means what it says: the gateway is gone.
//!
//! Other per-thread state a child inherits, checked: the signal mask is the forking thread's
//! (the standard library keeps it, measured), so the child empties its own before `exec`: a
//! signal blocked by some thread of the gateway never reaches `probe-rs` blocked. CPU affinity
//! and scheduling priority are per thread too, and never set by the gateway. Open files, the
//! serial port, SQLite's locks (POSIX record locks) and the working directory belong to the
//! process, not a thread.

use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::OnceLock;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The signal a child gets when the gateway dies: SIGTERM lets `probe-rs` release the probe.
pub(crate) const PARENT_DEATH_SIGNAL: i32 = libc::SIGTERM;

/// One spawn, carried to the spawner thread.
struct Request {
    command: Command,
    /// The runtime that will reap the child and own its pipes.
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Spawns `command` from the spawner thread, with the parent-death signal set (Linux).
/// Must be called inside a tokio runtime, which then owns the child.
pub(crate) async fn spawn(mut command: Command) -> io::Result<Child> {
    prepare_child(&mut command);
    let (reply, answer) = oneshot::channel();
    let request = Request {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()?
        .send(request)
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the process spawner thread dropped the request"))?
}

/// The spawner thread's queue, started on first use.
fn spawner() -> io::Result<&'static std_mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Result<std_mpsc::Sender<Request>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std_mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("spawner".into())
                .spawn(move || {
                    // Ends only if every sender is gone: the static one never is.
                    for mut request in rx {
                        let _runtime = request.runtime.enter();
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the process spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

/// Runs in the child between fork and exec: unblocks every signal, and (Linux) asks for
/// [`PARENT_DEATH_SIGNAL`] when the gateway dies.
fn prepare_child(command: &mut Command) {
    #[cfg(target_os = "linux")]
    let gateway = std::process::id();
    // SAFETY: sigemptyset, pthread_sigmask, prctl and getppid are async-signal-safe and touch
    // only the calling (child) process and a local.
    unsafe {
        command.pre_exec(move || {
            let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            let errno =
                libc::pthread_sigmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            #[cfg(target_os = "linux")]
            {
                if libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The gateway died between fork and prctl: the signal will never come.
                if u32::try_from(libc::getppid()).ok() != Some(gateway) {
                    return Err(io::Error::other("the gateway exited while starting it"));
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let asking = std::thread::spawn(move || {
            handle.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30").kill_on_drop(true);
                spawn(command).await
            })
        });
        let mut child = asking.join().unwrap().unwrap();
        // The thread that asked is gone: a parent-death signal bound to it comes at once.
        std::thread::sleep(Duration::from_millis(300));
        rt.block_on(async {
            assert_eq!(child.try_wait().unwrap(), None, "the child was signalled");
            child.kill().await.unwrap();
        });
    }

    #[test]
    fn a_child_starts_with_no_signal_blocked_whatever_its_forking_thread_blocked() {
        let blocked = std::thread::spawn(|| {
            // SAFETY: blocks SIGUSR1 in this short-lived thread only.
            unsafe {
                let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
                libc::sigemptyset(set.as_mut_ptr());
                libc::sigaddset(set.as_mut_ptr(), libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut command = Command::new("grep");
                command.args(["SigBlk", "/proc/self/status"]);
                prepare_child(&mut command);
                command.output().await.unwrap()
            })
        });
        let out = blocked.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "SigBlk:\t0000000000000000"
        );
    }
}
