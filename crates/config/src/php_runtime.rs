//! The app's PHP on this host: where its binary is, and running it with bounds.
//!
//! A worker host that ran `php artisan order:expire` has PHP. order-expire runs it for two
//! things only, both short: `php -r 'echo PHP_VERSION;'`, whose answer decides what
//! `PHP_VERSION_ID` says to a config file and how the PDO attribute numbers read, and the boot
//! of the app's own Laravel (`laravel_boot`) when a value it needs is PHP it does not evaluate.
//! Each run has a deadline and a cap on what it may print; past either it is killed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::version::PhpVersion;

/// Where a `php` is looked for when the process has no `PATH` (a supervisor or a test may
/// start the worker with an empty environment): the directories Debian and the official PHP
/// images install it in.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long `php -r 'echo PHP_VERSION;'` may take: it takes milliseconds.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a run may print on standard error; the first line is what an error shows.
const MAX_STDERR: usize = 64 * 1024;

/// What a run printed, within its caps.
pub(super) struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
}

/// The `php` binary: `given` (the setting, a path or a name), else `php`, looked up in `PATH`
/// as the shell would. `None` when there is none.
pub(super) fn find(given: Option<&str>) -> Option<PathBuf> {
    let name = given.unwrap_or("php");
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The version of the PHP at `php`.
pub(super) fn version(php: &Path) -> Result<PhpVersion, String> {
    let output = run(
        php,
        &["-r", "echo PHP_VERSION;"],
        b"",
        None,
        (VERSION_TIMEOUT, 256),
    )?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    PhpVersion::new(&text, format!("{}", php.display()))
        .ok_or_else(|| format!("{} printed {text:?}, not a PHP version", php.display()))
}

/// Runs `php ARGS` in `dir` (the current directory when `None`) with `stdin` as its input,
/// in the worker's own environment; kills it past `timeout` or once it printed more than
/// `max_stdout` bytes. A run that fails says why in one line: the exit status and the first
/// line it printed on standard error.
pub(super) fn run(
    php: &Path,
    args: &[&str],
    stdin: &[u8],
    dir: Option<&Path>,
    (timeout, max_stdout): (Duration, usize),
) -> Result<Output, String> {
    let shown = php.display();
    let mut command = Command::new(php);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    // Its own process group, so that what a config file starts is stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let input = stdin.to_vec();
    let writer = child.stdin.take().map(|mut pipe| {
        std::thread::spawn(move || {
            // A script that exits early closes the pipe: not an error of ours.
            let _ = pipe.write_all(&input);
        })
    });
    let overflow = Arc::new(AtomicBool::new(false));
    let stdout = child
        .stdout
        .take()
        .map(|pipe| capped_reader(pipe, max_stdout, Arc::clone(&overflow)));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| capped_reader(pipe, MAX_STDERR, Arc::new(AtomicBool::new(false))));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if overflow.load(Ordering::Relaxed) => {
                stop_group(&mut child);
                break Err(format!(
                    "{shown} printed more than {} KiB, far more than Laravel's configuration, and was stopped",
                    max_stdout / 1024
                ));
            }
            Ok(None) if Instant::now() >= deadline => {
                stop_group(&mut child);
                break Err(format!(
                    "{shown} did not finish within {} s and was stopped",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(format!("cannot wait for {shown}: {e}")),
        }
    };
    // Whatever it started and left behind may hold the pipes open: while such a process
    // lives, the group does too, and it is stopped after a grace period.
    let grace = Instant::now() + Duration::from_secs(2);
    let readers_done = || {
        [&stdout, &stderr]
            .iter()
            .all(|r| r.as_ref().is_none_or(|r| r.is_finished()))
    };
    while !readers_done() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !readers_done() {
        signal_group(child.id());
    }
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let collect = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    let (out, err) = (collect(stdout), collect(stderr));
    let status = status?;
    if overflow.load(Ordering::Relaxed) {
        return Err(format!(
            "{shown} printed more than {} KiB, far more than Laravel's configuration",
            max_stdout / 1024
        ));
    }
    if !status.success() {
        let first = String::from_utf8_lossy(&err)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| l.chars().take(400).collect::<String>())
            .unwrap_or_else(|| "no message".into());
        return Err(format!("{shown} failed ({status}): {first}"));
    }
    Ok(Output { stdout: out })
}

/// Kills the child's process group (the child and what it started), then reaps the child.
fn stop_group(child: &mut std::process::Child) {
    signal_group(child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILL to the process group `pid` leads (our child's own: `process_group(0)` above).
fn signal_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid signals that process group only; it is the group
        // our child leads, alive as long as the child or one of its processes is.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// Reads `pipe` to its end on a thread of its own, keeping at most `cap` bytes; past the cap
/// it raises `overflow` and keeps reading (and dropping), so that the child never blocks on a
/// full pipe before it is stopped.
fn capped_reader(
    mut pipe: impl Read + Send + 'static,
    cap: usize,
    overflow: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = cap.saturating_sub(kept.len());
                    kept.extend_from_slice(&buffer[..n.min(room)]);
                    if n > room {
                        overflow.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        kept
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell script standing in for a PHP binary: what is bounded is the process, whatever
    /// it runs.
    fn fake_php(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("php");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[test]
    fn a_run_is_bounded_in_time_and_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let php = fake_php(dir.path(), "echo 8.3.4");
        assert_eq!(version(&php).expect("a version").id, 80304);

        let slow = fake_php(dir.path(), "sleep 30");
        let started = Instant::now();
        let err = run(&slow, &[], b"", None, (Duration::from_millis(300), 64))
            .err()
            .expect("stopped");
        assert!(err.contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));

        let chatty = fake_php(dir.path(), "yes x");
        let err = run(&chatty, &[], b"", None, (Duration::from_secs(10), 1024))
            .err()
            .expect("capped");
        assert!(err.contains("more than 1 KiB"), "{err}");

        let lingering = fake_php(dir.path(), "sleep 30 & echo 8.4.1");
        let started = Instant::now();
        assert_eq!(version(&lingering).expect("a version").id, 80401);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "what it left is stopped"
        );

        let failing = fake_php(dir.path(), "echo '\nFatal error: boom' >&2; exit 255");
        let err = run(&failing, &[], b"", None, (Duration::from_secs(10), 1024))
            .err()
            .expect("failed");
        assert!(err.ends_with("Fatal error: boom"), "{err}");

        let not_php = fake_php(dir.path(), "echo hello");
        assert!(version(&not_php).is_err());
    }

    #[test]
    fn the_binary_is_a_path_or_a_name_on_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let php = fake_php(dir.path(), "true");
        assert_eq!(find(php.to_str()), Some(php.clone()));
        assert_eq!(find(Some("/nonexistent/php")), None);
        let not_executable = dir.path().join("plain");
        std::fs::write(&not_executable, "").expect("write");
        assert_eq!(find(not_executable.to_str()), None);
    }
}
