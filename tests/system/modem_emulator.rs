//! `ModemEmulator`: an EMULATOR of the REYAX RYLR998 LoRa modem for the `rylr998` source's
//! tests, not a real modem. It holds the master side of a pseudo-terminal pair whose slave
//! the gateway opens as its serial device; a thread reads the gateway's AT commands
//! (`AT+SEND` data cut by its length field, as the real modem does) and answers each as told
//! (`+OK` by default), recording every command. The test writes what the modem would send:
//! `+RCV` frames (any bytes, split or fused as it likes), `+READY`, noise.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the emulated modem answers a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `+OK`.
    Ok,
    /// Nothing at all (a modem that is off, or wired wrong).
    Silent,
    /// `+ERR=<code>` to commands that start with the prefix, `+OK` to the others.
    ErrOn(String, u16),
    /// Like `ErrOn`, but answers to commands received within the delay after the first one
    /// all come only when it ends, in order (a modem still booting, answering late).
    LateFirstThenErrOn(Duration, String, u16),
    /// `+READY` (a restart) instead of the answer to the first command with the prefix; `+OK`
    /// to everything else.
    ReadyOnceOn(String),
}

struct Shared {
    /// Every command received, with its `\r\n`.
    commands: Vec<Vec<u8>>,
    answer: Answer,
    /// A one-time behaviour (late first answer, one restart) was used.
    used: bool,
}

pub struct ModemEmulator {
    master: i32,
    /// The device path the gateway opens (a pty slave).
    pub path: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ModemEmulator {
    /// A modem that answers `answer`.
    pub fn start(answer: Answer) -> Self {
        // SAFETY: plain libc pty calls on a fd we own; ptsname's buffer is copied at once.
        let (master, path) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::grantpt(master), 0);
            assert_eq!(libc::unlockpt(master), 0);
            let name = CStr::from_ptr(libc::ptsname(master))
                .to_string_lossy()
                .into_owned();
            (master, name)
        };
        let shared = Arc::new(Mutex::new(Shared {
            commands: Vec::new(),
            answer,
            used: false,
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || serve(master, &shared, &stop))
        };
        ModemEmulator {
            master,
            path,
            shared,
            stop,
            reader: Some(reader),
        }
    }

    /// Changes how later commands are answered.
    pub fn answer(&self, answer: Answer) {
        self.shared.lock().unwrap().answer = answer;
    }

    /// Writes `bytes` as the modem would send them, in one write.
    pub fn send(&self, bytes: &[u8]) {
        write_all(self.master, bytes);
    }

    /// Every command received so far, with its `\r\n`.
    pub fn commands(&self) -> Vec<Vec<u8>> {
        self.shared.lock().unwrap().commands.clone()
    }

    /// The `AT+SEND` commands received so far.
    pub fn sends(&self) -> Vec<Vec<u8>> {
        self.commands()
            .into_iter()
            .filter(|c| c.starts_with(b"AT+SEND="))
            .collect()
    }

    /// Waits until `n` commands equal to `command` were received.
    pub async fn wait_for_command(&self, command: &[u8], n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.commands().iter().filter(|c| *c == command).count();
            if seen >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the modem emulator saw {command:?} {seen} time(s), not {n}, within {timeout:?}; commands: {:?}",
                self.commands()
                    .iter()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` `AT+SEND` commands were received.
    pub async fn wait_for_sends(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.sends().len() < n {
            assert!(
                Instant::now() < deadline,
                "{} AT+SEND commands, not {n}, within {timeout:?}",
                self.sends().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ModemEmulator {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        // SAFETY: closing our own pty master once.
        unsafe { libc::close(self.master) };
    }
}

/// The command at the front of `pending`, if complete (`lora_link::at::command_len`: by the
/// length field for `AT+SEND`, as the real modem reads it).
fn take_command(pending: &mut VecDeque<u8>) -> Option<Vec<u8>> {
    let bytes: Vec<u8> = pending.iter().copied().collect();
    let end = lora_link::at::command_len(&bytes)?;
    Some(pending.drain(..end).collect())
}

fn serve(master: i32, shared: &Mutex<Shared>, stop: &std::sync::atomic::AtomicBool) {
    let mut pending = VecDeque::new();
    let mut buf = [0u8; 1024];
    // Answers held back while the emulated modem "boots", and until when.
    let mut held: Vec<String> = Vec::new();
    let mut boot_until: Option<Instant> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if boot_until.is_some_and(|t| Instant::now() >= t) {
            for reply in held.drain(..) {
                write_all(master, reply.as_bytes());
            }
        }
        let mut poll = libc::pollfd {
            fd: master,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd of ours, 50 ms timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, 50) };
        if ready <= 0 || poll.revents & libc::POLLIN == 0 {
            // No slave open (POLLHUP) or nothing to read yet.
            if ready > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        // SAFETY: reading into our buffer from our fd.
        let n = unsafe { libc::read(master, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        pending.extend(&buf[..n as usize]);
        while let Some(command) = take_command(&mut pending) {
            let (reply, delay) = {
                let mut s = shared.lock().unwrap();
                s.commands.push(command.clone());
                let first = !s.used;
                let err_or_ok = |prefix: &str, code: u16| {
                    if command.starts_with(prefix.as_bytes()) {
                        format!("+ERR={code}\r\n")
                    } else {
                        "+OK\r\n".to_string()
                    }
                };
                match s.answer.clone() {
                    Answer::Ok => (Some("+OK\r\n".to_string()), None),
                    Answer::Silent => (None, None),
                    Answer::ErrOn(prefix, code) => (Some(err_or_ok(&prefix, code)), None),
                    Answer::LateFirstThenErrOn(delay, prefix, code) => {
                        s.used = true;
                        let until = *boot_until.get_or_insert_with(|| Instant::now() + delay);
                        let late = (Instant::now() < until).then_some(delay);
                        (Some(err_or_ok(&prefix, code)), late)
                    }
                    Answer::ReadyOnceOn(prefix)
                        if first && command.starts_with(prefix.as_bytes()) =>
                    {
                        s.used = true;
                        (Some("+READY\r\n".to_string()), None)
                    }
                    Answer::ReadyOnceOn(_) => (Some("+OK\r\n".to_string()), None),
                }
            };
            match (reply, delay) {
                (Some(reply), Some(_)) => held.push(reply),
                (Some(reply), None) => write_all(master, reply.as_bytes()),
                (None, _) => {}
            }
        }
    }
}

fn write_all(fd: i32, bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: fd is our open pty master; the buffer outlives the call.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        assert!(
            n > 0,
            "write to the modem emulator's pty: {}",
            std::io::Error::last_os_error()
        );
        off += n as usize;
    }
}

/// `+RCV=<sender>,<len>,<data>,<rssi>,<snr>\r\n`.
pub fn rcv(sender: u16, data: &[u8], rssi: i16, snr: i16) -> Vec<u8> {
    let mut v = format!("+RCV={sender},{},", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(format!(",{rssi},{snr}\r\n").as_bytes());
    v
}
