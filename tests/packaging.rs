//! What operators install, built by the project's own scripts as an operator would build it,
//! then installed and run: the Debian package (`scripts/package-deb`: `dpkg -i`, the binary, its
//! man pages, completions and unit, `dpkg -r`) and the container image (`scripts/build-image`:
//! a non-root worker in a read-only container cancelling real orders).
//!
//! Both scripts build the static binary (`--profile dist --target x86_64-unknown-linux-musl`)
//! and install what they need on first use (musl-gcc, the Rust target, cargo-deb under
//! `target/deploy-tools`); podman and runc come from `scripts/test`.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    App, RedisServer, Scrape, TestDb, Worker, default_key, http_get, run_ok, setex, wait_until,
};

/// A cold first run builds the static binary (about 3 minutes on 2 cores) and installs
/// cargo-deb (about 3 more); later runs take seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const WAIT: Duration = Duration::from_secs(60);
const VERSION: &str = env!("CARGO_PKG_VERSION");
const PACKAGE: &str = "order-expire";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Runs one of the project's scripts and returns the last line it printed: what it built.
fn script(name: &str, args: &[&str]) -> String {
    let mut command = Command::new(repo().join(name));
    command.args(args).current_dir(repo());
    let output = run_ok(command, SCRIPT_TIMEOUT);
    let printed = stdout(&output);
    printed.lines().last().unwrap_or_default().to_string()
}

/// Whether the ELF executable at `path` asks for a dynamic loader (a PT_INTERP program header):
/// a static binary does not, and runs on any Linux, in an empty image.
fn needs_a_loader(path: &Path) -> bool {
    let elf = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(
        &elf[..5],
        b"\x7fELF\x02",
        "{} is a 64-bit ELF",
        path.display()
    );
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(
        elf[0x20..0x28].try_into().expect("8 bytes"),
    ))
    .expect("offset");
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    (0..entries).any(|i| {
        let at = phoff + i * entry_size;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == 3
    })
}

// --- The Debian package ----------------------------------------------------------------------

/// `dpkg ARGS`, waiting (bounded) while another package manager holds dpkg's lock.
fn dpkg(args: &[&str]) -> Output {
    for _ in 0..60 {
        let mut command = Command::new("dpkg");
        command.args(args);
        let output = common::run_bounded(command, Duration::from_secs(120));
        let locked = String::from_utf8_lossy(&output.stderr).contains("lock");
        if output.status.success() || !locked {
            return output;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("dpkg's lock stayed held for 2 minutes (dpkg {args:?})");
}

/// dpkg's status of the package, e.g. `install ok installed`; empty when dpkg has no record.
fn installed_status() -> String {
    let mut command = Command::new("dpkg-query");
    command.args(["--show", "--showformat=${Status}", PACKAGE]);
    stdout(&common::run_bounded(command, Duration::from_secs(60)))
}

fn is_installed() -> bool {
    installed_status().split_whitespace().last() == Some("installed")
}

/// The package installed by this test; purged on drop, also when the test fails.
struct Installed;

impl Installed {
    fn new(deb: &str) -> Self {
        // Someone's own installation is not ours to replace or remove.
        assert!(
            !is_installed(),
            "the {PACKAGE} package is already installed on this machine: remove it \
             (dpkg --purge {PACKAGE}) to run this test"
        );
        let guard = Self;
        let output = dpkg(&["--install", deb]);
        assert!(
            output.status.success(),
            "dpkg --install {deb}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["--purge", PACKAGE]);
    }
}

/// `man -w PAGE`: where man finds the page, if it does.
fn man_path(page: &str) -> Option<String> {
    let mut command = Command::new("man");
    command.args(["-w", page]);
    let output = common::run_bounded(command, Duration::from_secs(60));
    output.status.success().then(|| stdout(&output))
}

/// What bash completes after `order-expire WORDS`, with the package's completion loaded as
/// bash-completion would load it.
fn bash_completes(words: &str) -> Vec<String> {
    let script = format!(
        "source /usr/share/bash-completion/completions/{PACKAGE} || exit 1
         COMP_WORDS=({PACKAGE} {words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}
         \"$(complete -p {PACKAGE} | sed 's/.*-F \\([^ ]*\\) .*/\\1/')\" {PACKAGE} \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let mut command = Command::new("bash");
    command.args(["--noprofile", "--norc", "-c", &script]);
    let output = run_ok(command, Duration::from_secs(60));
    stdout(&output).lines().map(str::to_string).collect()
}

#[test]
fn debian_package_installs_runs_and_removes() {
    let deb = script("scripts/package-deb", &[]);
    assert!(deb.ends_with(".deb"), "scripts/package-deb printed {deb:?}");
    let size = fs::metadata(&deb).map(|m| m.len()).expect("the .deb");
    println!("debian package: {deb}, {:.1} MB", size as f64 / 1e6);

    let mut command = Command::new("dpkg-deb");
    command.args(["--field", &deb, "Package", "Version", "Architecture"]);
    let fields = stdout(&run_ok(command, Duration::from_secs(60)));
    assert_eq!(
        fields,
        format!("Package: {PACKAGE}\nVersion: {VERSION}-1\nArchitecture: amd64")
    );

    let installed = Installed::new(&deb);
    let binary = Path::new("/usr/bin/order-expire");
    assert!(
        !needs_a_loader(binary),
        "the packaged binary is static: it depends on no libc of the host"
    );
    // As an operator's shell and as systemd start it: nothing from the environment needed.
    let mut command = Command::new(binary);
    command.env_clear().arg("--version");
    assert_eq!(
        stdout(&run_ok(command, Duration::from_secs(30))),
        format!("order-expire {VERSION}")
    );

    for page in [
        PACKAGE,
        "order-expire-run",
        "order-expire-check",
        "order-expire-sweep",
        "order-expire-status",
        "order-expire-schedule",
    ] {
        let path = man_path(page).unwrap_or_else(|| panic!("man -w {page} finds no page"));
        assert_eq!(path, format!("/usr/share/man/man1/{page}.1.gz"));
    }

    // The completions: bash's offers the subcommands and the options, zsh's and fish's are
    // where those shells look.
    let subcommands = bash_completes("ch");
    assert!(
        subcommands.contains(&"check".to_string()),
        "{subcommands:?}"
    );
    let options = bash_completes("--stop-");
    assert_eq!(options, ["--stop-timeout"]);
    for file in [
        "/usr/share/zsh/vendor-completions/_order-expire",
        "/usr/share/fish/vendor_completions.d/order-expire.fish",
    ] {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            text.contains("stop-timeout"),
            "{file} completes the options"
        );
    }

    // The unit runs the packaged binary; the example settings are where the man page says.
    let unit = fs::read_to_string("/usr/lib/systemd/system/order-expire.service")
        .expect("the systemd unit");
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert_eq!(exec_start.split_whitespace().next(), binary.to_str());
    for example in [
        "order-expire.env",
        "supervisor.conf",
        "prometheus-alerts.yml",
        "grafana-dashboard.json",
    ] {
        let path = Path::new("/usr/share/doc/order-expire/examples").join(example);
        assert!(path.is_file(), "{} is installed", path.display());
    }
    // The README and the guide it links to, with the same relative paths as in the repository.
    for doc in [
        "README.md",
        "docs/README.md",
        "docs/configuration.md",
        "docs/performance.md",
        "docs/bench/results.md",
    ] {
        let path = Path::new("/usr/share/doc/order-expire").join(doc);
        assert!(path.is_file(), "{} is installed", path.display());
    }

    let removed = dpkg(&["--remove", PACKAGE]);
    assert!(removed.status.success(), "dpkg --remove {PACKAGE}");
    assert!(!binary.exists(), "dpkg --remove took the binary away");
    assert_eq!(man_path(PACKAGE), None, "and the man page");
    assert!(!Path::new("/usr/lib/systemd/system/order-expire.service").exists());
    drop(installed);
    assert_eq!(installed_status(), "", "purged: dpkg keeps no record");
}

// --- The container image ---------------------------------------------------------------------

/// podman with its own image store in a temporary folder, removed with everything in it; the
/// container a test starts is removed on drop too, also when the test fails.
struct Podman {
    dir: tempfile::TempDir,
    container: String,
}

impl Podman {
    fn new() -> Self {
        Self {
            dir: tempfile::TempDir::new().expect("temp dir"),
            container: format!("order-expire-test-{}", std::process::id()),
        }
    }

    /// The options before podman's command: a private store (vfs: works on any filesystem),
    /// and runc, which unlike crun also runs on hosts whose cgroups are in hybrid mode.
    fn global_options(&self) -> Vec<String> {
        let path = |name: &str| self.dir.path().join(name).to_string_lossy().into_owned();
        vec![
            "--root".into(),
            path("root"),
            "--runroot".into(),
            path("run"),
            "--storage-driver".into(),
            "vfs".into(),
            "--runtime".into(),
            "runc".into(),
            "--events-backend".into(),
            "file".into(),
        ]
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command.args(self.global_options()).args(args);
        command
    }

    /// `podman run` of `image` in the hardening docs/operating.md recommends: read-only, no
    /// capabilities, no new privileges, the `.env` mounted read-only; host networking so that
    /// the test's loopback servers are reachable.
    fn run(&self, image: &str, env_file: &Path, args: &[&str]) -> Command {
        let mount = format!("{}:/app/.env:ro", env_file.display());
        let mut command = self.command(&[
            "run",
            "--rm",
            "--name",
            &self.container,
            "--read-only",
            "--cap-drop",
            "all",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "host",
            // Stopped by conmon after 5 minutes even if this test process is killed.
            "--timeout",
            "300",
            // podman raises both limits to the maximum by default, which needs a capability
            // root lacks in some VMs and containers; these are ample for the worker.
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
            "--volume",
            &mount,
        ]);
        // The image's metrics address listens on every interface, for a pod; on the host's
        // network a test listens on loopback only, on a free port (logged).
        command.args([
            "--env",
            "RUST_LOG=info",
            "--env",
            "ORDER_EXPIRE_METRICS_ADDR=127.0.0.1:0",
        ]);
        command.arg(image).args(args);
        command
    }

    fn inspect(&self, format: &str, what: &str) -> String {
        let output = run_ok(
            self.command(&["inspect", "--format", format, what]),
            Duration::from_secs(60),
        );
        stdout(&output)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let remove = self.command(&["rm", "--force", "--ignore", &self.container]);
        let _ = common::run_bounded(remove, Duration::from_secs(60));
    }
}

/// The user id a process runs as, from the kernel's view of it.
fn uid_of(pid: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .expect("Uid line")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn container_image_cancels_orders_as_a_non_root_user() {
    let podman = Podman::new();
    let image = "localhost/order-expire:test";
    let mut args = vec!["--tag", image, "--"];
    let options = podman.global_options();
    args.extend(options.iter().map(String::as_str));
    let built = tokio::task::block_in_place(|| script("scripts/build-image", &args));
    assert_eq!(built, image);
    let size: u64 = podman.inspect("{{.Size}}", image).parse().expect("a size");
    println!("container image: {:.1} MB", size as f64 / 1e6);
    assert_eq!(podman.inspect("{{.Config.User}}", image), "65532:65532");
    // The image holds the static binary: nothing else in it could load a dynamic one.
    let context = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("container/context");
    assert!(!needs_a_loader(&context.join("order-expire")));

    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let product = db.add_product("Tea", 100).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(db.place_order(product, 2).await);
    }
    assert_eq!(db.stock(product).await, 60);
    let app = App::new(&redis, &db, "");

    let version = run_ok(
        podman.run(image, &app.env_file(), &["--version"]),
        Duration::from_secs(60),
    );
    assert_eq!(stdout(&version), format!("order-expire {VERSION}"));

    // The image's own command (JSON logs, the worker), as Kubernetes runs it.
    let mut worker = Worker::spawn(podman.run(image, &app.env_file(), &[]));
    let pid = podman.inspect("{{.State.Pid}}", &podman.container);
    assert_eq!(uid_of(&pid), "65532", "the worker runs as the image's user");
    // The probes the Kubernetes manifests use answer from inside the container.
    let metrics = worker.metrics_addr();
    assert_eq!(http_get(&metrics, "/healthz").0, 200);
    wait_until(WAIT, "/readyz answers 200", || async {
        http_get(&metrics, "/readyz").0 == 200
    })
    .await;

    let mut conn = redis.conn(1);
    for id in &ids {
        setex(&mut conn, &default_key(*id), 1, &id.to_string());
    }
    wait_until(WAIT, "20 orders cancelled", || async {
        db.count_status(2).await == 20
    })
    .await;
    assert_eq!(db.stock(product).await, 100, "the stock is back");
    let mut cancelled = worker.cancelled_orders();
    cancelled.sort_unstable();
    assert_eq!(cancelled, ids);
    let scrape = Scrape::take(&metrics);
    assert_eq!(scrape.get("order_expire_orders_cancelled_total"), 20.0);
    assert_eq!(scrape.get("order_expire_stock_units_returned_total"), 40.0);

    // SIGTERM, as `podman stop` and the kubelet send it, reaches the worker through podman, and
    // the worker stops cleanly.
    let status = worker.stop(Duration::from_secs(30));
    assert!(status.success(), "the worker exited with {status}");
    assert_eq!(worker.count_event("stopped"), 1);
}
