//! Python side of the interop tests: a virtualenv holding the real third-party RocketMQ client
//! (PyPI `rocketmq` 0.4.4 = Apache RocketMQ's C++ client `librocketmq.so` + a ctypes wrapper),
//! and a handle for running the scripts in `tests/interop/` as child processes.
//!
//! Include it from an integration test with `#[path = "../support/python.rs"] mod python;`
//! (path relative to the including file). It uses `std` only.
//!
//! * [`venv_python`] creates `<target>/interop-venv` once (`python3 -m venv`, then
//!   `pip install -r tests/interop/requirements.txt`), checks that `import rocketmq` loads
//!   `librocketmq.so`, and returns the venv's `python`. A file lock
//!   (`<target>/interop-venv.lock`) serialises builders across test processes; a stamp file
//!   written last marks a finished venv, so an interrupted build is redone. Any failure panics
//!   with what to install: a missing tool fails the test, it never skips it.
//! * [`PyProcess`] runs a script with arguments and environment, collects stdout lines and
//!   stderr, and kills the process (by its PID, through `Child::kill`) when dropped. Each process
//!   gets its own fresh `HOME` (librocketmq writes its log to `$HOME/logs/rocketmq-cpp/` and
//!   broadcasting offsets to `$HOME/.rocketmq_offsets/`), removed on drop.
//! * [`Capture`] starts `tests/interop/capture.py` (a fake nameserver + broker that logs every
//!   frame) on a free 127.0.0.1 port.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long creating the venv and installing the wheel may take (a cold run takes seconds; this
/// bound only guards against a registry that never answers).
pub const VENV_SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Interval between checks while polling a child process for exit (always with a deadline).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// `tests/interop/`: found by walking up from this crate's manifest dir, so the module also works
/// when included from a workspace member's tests.
pub fn interop_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        let candidate = dir.join("tests").join("interop");
        if candidate.join("requirements.txt").is_file() {
            return candidate;
        }
    }
    panic!(
        "tests/interop/requirements.txt not found in {} or any parent directory",
        manifest.display()
    );
}

/// `tests/interop/client.py`: drives the real RocketMQ C++ client (see its docstring).
pub fn client_script() -> PathBuf {
    interop_dir().join("client.py")
}

/// `tests/interop/capture.py`: fake nameserver + broker that logs every frame.
pub fn capture_script() -> PathBuf {
    interop_dir().join("capture.py")
}

/// The cargo target directory: `$CARGO_TARGET_DIR` if set, else the directory above
/// `<profile>/deps/` holding the running test binary, else `<manifest>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
        };
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|name| name == "deps")
        && let Some(target) = deps.parent().and_then(Path::parent)
    {
        return target.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

/// The venv's python with `rocketmq` installed and `librocketmq.so` loadable. The first call in a
/// process builds or checks the venv; later calls return the cached result.
///
/// Panics, with the command output and what to install, if python3, venv/ensurepip, PyPI or a
/// shared library needed by `librocketmq.so` is missing.
pub fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(build_venv) {
        Ok(python) => python.clone(),
        Err(message) => panic!("interop venv unavailable: {message}"),
    }
}

fn build_venv() -> Result<PathBuf, String> {
    let requirements_path = interop_dir().join("requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let target = target_dir();
    fs::create_dir_all(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let venv = target.join("interop-venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".raftmq-ready");

    // One builder at a time across processes; the lock is released when `lock` is dropped.
    let lock_path = target.join("interop-venv.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;

    let base_version = run_checked(
        Command::new("python3").arg("--version"),
        Duration::from_secs(60),
        "python3 --version",
    )
    .map_err(|e| {
        format!(
            "{e}\npython3 is required on PATH for the interop tests \
             (Debian: apt-get install python3 python3-venv)"
        )
    })?;
    let expected_stamp = format!("{}\n{}", base_version.trim(), requirements);
    let ready = fs::read_to_string(&stamp).is_ok_and(|s| s == expected_stamp) && python.is_file();
    if !ready {
        if venv.exists() {
            fs::remove_dir_all(&venv)
                .map_err(|e| format!("cannot remove stale {}: {e}", venv.display()))?;
        }
        run_checked(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            VENV_SETUP_TIMEOUT,
            "python3 -m venv",
        )
        .map_err(|e| {
            format!(
                "{e}\n`python3 -m venv` needs the venv module and ensurepip \
                 (Debian: apt-get install python3-venv)"
            )
        })?;
        run_checked(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .arg("-r")
                .arg(&requirements_path)
                .env("PIP_NO_INPUT", "1"),
            VENV_SETUP_TIMEOUT,
            "pip install -r tests/interop/requirements.txt",
        )
        .map_err(|e| format!("{e}\nthe wheel comes from PyPI: is the registry reachable?"))?;
    }
    // Every process checks that the package imports and the shared library loads, so a broken
    // system library shows up here and not as a confusing client failure later.
    run_checked(
        Command::new(&python)
            .arg(client_script())
            .arg("probe")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(120),
        "client.py probe (import rocketmq, load librocketmq.so)",
    )
    .map_err(|e| {
        format!(
            "{e}\nlibrocketmq.so links against the system's libstdc++.so.6, libgcc_s.so.1, \
             libpthread, librt, libdl, libm and libc (its libz is bundled in the wheel); \
             if one is missing: apt-get install libstdc++6 libgcc-s1"
        )
    })?;
    if !ready {
        fs::write(&stamp, &expected_stamp)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    }
    drop(lock);
    Ok(python)
}

/// Runs `command` to completion within `timeout`; returns stdout, or an error naming `what` with
/// the exit status and both outputs.
fn run_checked(command: &mut Command, timeout: Duration, what: &str) -> Result<String, String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start {:?}: {e}", command.get_program()))?;
    let mut child = KillOnDrop(child);
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                return Err(format!(
                    "{what}: still running after {timeout:?}; killed (pid {})",
                    child.0.id()
                ));
            }
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(e) => return Err(format!("{what}: wait failed: {e}")),
        }
    };
    let stdout = join_output(stdout);
    let stderr = join_output(stderr);
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what} failed ({status})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout, 4000),
            tail(&stderr, 4000)
        ))
    }
}

/// Kills (by PID) and reaps the child when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already exited is fine: kill then reports an error we have no use for.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<String>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error only truncates diagnostics.
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    })
}

fn join_output(handle: Option<thread::JoinHandle<String>>) -> String {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// What a finished script printed.
#[derive(Debug)]
pub struct ScriptOutput {
    pub status: ExitStatus,
    /// stdout, one entry per line (client.py prints one JSON object per line).
    pub stdout: Vec<String>,
    pub stderr: String,
    /// librocketmq's log for the process (tail of each file), read after it exited.
    pub cpp_log: String,
}

/// A running Python script (venv python), killed by PID when dropped.
pub struct PyProcess {
    child: Child,
    what: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    home: PathBuf,
    remove_home: bool,
}

impl PyProcess {
    /// Starts `<venv python> script args...` with `env` added to this process's environment,
    /// `PYTHONUNBUFFERED=1`, and `HOME` set to a fresh directory under
    /// `<target>/interop-tmp/` (unless `env` sets `HOME`).
    pub fn spawn(script: &Path, args: &[&str], env: &[(&str, &str)]) -> PyProcess {
        let python = venv_python();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let (home, remove_home) = match env.iter().find(|(k, _)| *k == "HOME") {
            Some((_, h)) => (PathBuf::from(h), false),
            None => {
                let n = SEQ.fetch_add(1, Ordering::Relaxed);
                let home = target_dir()
                    .join("interop-tmp")
                    .join(format!("home-{}-{n}", std::process::id()));
                // A leftover from a killed earlier run with the same pid is stale.
                let _ = fs::remove_dir_all(&home);
                fs::create_dir_all(&home)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", home.display()));
                (home, true)
            }
        };
        let what = format!(
            "{} {}",
            script
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            args.join(" ")
        );
        let mut command = Command::new(&python);
        command
            .arg(script)
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {what}: {e}", python.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        PyProcess {
            child,
            what,
            lines,
            seen: Vec::new(),
            stderr,
            home,
            remove_home,
        }
    }

    /// `client.py SUBCOMMAND args...` (see the script's docstring for subcommands and output).
    pub fn client(args: &[&str], env: &[(&str, &str)]) -> PyProcess {
        PyProcess::spawn(&client_script(), args, env)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `HOME` the process runs with (librocketmq's log is under `logs/rocketmq-cpp/`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// stdout lines returned so far by [`Self::next_line`] / [`Self::wait_for_line`].
    pub fn seen_lines(&self) -> &[String] {
        &self.seen
    }

    /// The tail of librocketmq's own log files for this process (`$HOME/logs/rocketmq-cpp/`).
    pub fn cpp_log(&self) -> String {
        cpp_log_of(&self.home)
    }

    /// Next stdout line, or `None` if none arrives within `timeout` or stdout closed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Reads stdout until a line satisfies `pred` and returns it; panics with the process's output
    /// if the deadline passes or stdout closes first.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no matching line within {timeout:?}\n{}",
                        self.what,
                        self.report()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: stdout closed before a matching line\n{}",
                        self.what,
                        self.report()
                    )
                }
            }
        }
    }

    /// Waits (polling, with a deadline) for the process to exit and returns its output; on
    /// timeout the process is killed and the test panics with what it printed.
    pub fn wait(mut self, timeout: Duration) -> ScriptOutput {
        let what = format!("{} to exit", self.what);
        let child = std::cell::RefCell::new(&mut self.child);
        let (seen, stderr, home) = (&self.seen, &self.stderr, &self.home);
        let status = testkit::wait::until_blocking_reporting(
            &what,
            timeout,
            || {
                child
                    .borrow_mut()
                    .try_wait()
                    .unwrap_or_else(|e| panic!("wait failed: {e}"))
            },
            || {
                let _ = child.borrow_mut().kill(); // Reaped in Drop.
                format!("killed\n{}", report_text(seen, stderr, home))
            },
        );
        // The process has exited: the reader thread ends at EOF, so this drains the rest.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        ScriptOutput {
            status,
            stdout: std::mem::take(&mut self.seen),
            stderr: self.stderr(),
            cpp_log: self.cpp_log(),
        }
    }

    /// Like [`Self::wait`], but panics unless the exit status is 0.
    pub fn wait_success(self, timeout: Duration) -> ScriptOutput {
        let what = self.what.clone();
        let out = self.wait(timeout);
        assert!(
            out.status.success(),
            "{what}: exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- librocketmq log ---\n{}",
            out.status,
            out.stdout.join("\n"),
            tail(&out.stderr, 4000),
            tail(&out.cpp_log, 6000)
        );
        out
    }

    /// Diagnostics for a failed expectation: stdout seen, stderr, librocketmq's log.
    pub fn report(&self) -> String {
        report_text(&self.seen, &self.stderr, &self.home)
    }
}

/// The tail of librocketmq's log files under `home` (`logs/rocketmq-cpp/`).
fn cpp_log_of(home: &Path) -> String {
    let dir = home.join("logs").join("rocketmq-cpp");
    let mut out = String::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if let Ok(text) = fs::read_to_string(&path) {
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    path.display(),
                    tail(&text, 6000)
                ));
            }
        }
    }
    out
}

/// What a script printed and librocketmq logged, for failure messages.
fn report_text(seen: &[String], stderr: &Mutex<String>, home: &Path) -> String {
    let stderr = stderr
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}\n--- librocketmq log ---\n{}",
        seen.join("\n"),
        tail(&stderr, 4000),
        tail(&cpp_log_of(home), 6000)
    )
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        // Already exited is fine: kill then reports an error we have no use for.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.remove_home {
            let _ = fs::remove_dir_all(&self.home); // Best effort: it is under target/.
        }
    }
}

/// Runs `script args...` to completion (see [`PyProcess::spawn`] for the environment).
pub fn run_script(
    script: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> ScriptOutput {
    PyProcess::spawn(script, args, env).wait(timeout)
}

/// `tests/interop/capture.py` listening on a free 127.0.0.1 port; killed when dropped.
pub struct Capture {
    pub process: PyProcess,
    /// `127.0.0.1:PORT`, to pass as `--namesrv`.
    pub addr: String,
}

impl Capture {
    /// Starts capture.py with `args` (e.g. `["--store", "--log", path]`) and waits for its
    /// `READY {"addr": ...}` line.
    pub fn start(args: &[&str]) -> Capture {
        let mut process = PyProcess::spawn(&capture_script(), args, &[]);
        let line = process.wait_for_line(Duration::from_secs(30), |l| l.starts_with("READY "));
        let addr = line
            .split("\"addr\": \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("capture.py READY line without addr: {line}"))
            .to_string();
        Capture { process, addr }
    }
}

/// One send the C++ client reported acknowledged: key, queue offset (the wrapper reports no
/// queue id), wall-clock ms.
#[derive(Debug, Clone)]
pub struct CppSent {
    pub key: String,
    pub queue_offset: i64,
    pub at_ms: u64,
}

/// Starts the C++ client sending `cpp-<i>` keys to `topic` with `send_sync` every 20 ms for
/// `duration_secs`, and waits until it started (creating the virtualenv first may take a while
/// on a fresh machine). Call it from a blocking context.
pub fn cpp_sync_producer(namesrv: &str, topic: &str, group: &str, duration_secs: u32) -> PyProcess {
    let duration = duration_secs.to_string();
    let mut cpp = PyProcess::client(
        &[
            "produce",
            "--namesrv",
            namesrv,
            "--topic",
            topic,
            "--group",
            group,
            "--mode",
            "sync",
            "--duration",
            &duration,
            "--interval-ms",
            "20",
            "--keys-prefix",
            "cpp-",
            "--log-level",
            "warn",
        ],
        &[],
    );
    cpp.wait_for_line(Duration::from_secs(60), |l| l.contains("\"started\""));
    cpp
}

/// The sends a `produce` run reported acknowledged, and how many it reported failed.
pub fn cpp_sends(out: &ScriptOutput) -> (Vec<CppSent>, usize) {
    let mut sent = Vec::new();
    let mut failed = 0;
    for line in &out.stdout {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match event["event"].as_str() {
            Some("sent") => sent.push(CppSent {
                key: event["key"].as_str().expect("key").to_string(),
                queue_offset: event["queue_offset"].as_i64().expect("queue offset"),
                at_ms: event["at_ms"].as_u64().expect("ack time"),
            }),
            Some("failed") => failed += 1,
            _ => {}
        }
    }
    (sent, failed)
}
