//! Writes the man pages and shell completions that the Debian package ships, from the real
//! command line (`order_expire::cli::Cli`), so they can never drift from `--help`.
//!
//! ```text
//! cargo run --example package_assets -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/man/order-expire.1` (and one page per subcommand, `order-expire-check.1`...)
//! and `OUT_DIR/completions/` for bash, zsh and fish. `scripts/package-deb` runs it before
//! `cargo deb`. It is an example rather than a subcommand so that the binary operators run
//! carries no man-page or completion generator.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use order_expire::cli::Cli;

/// The name operators type, and so the name of every page and completion file.
const BIN: &str = "order-expire";

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("package_assets: error: give the output folder, e.g. target/package/assets");
        return ExitCode::from(2);
    };
    match write_all(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "package_assets: error: cannot write into {}: {e}",
                out.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    write_man_pages(&man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), BIN, &completions)?;
    }
    Ok(())
}

/// `order-expire.1` with the sections clap knows plus EXIT STATUS, FILES and ENVIRONMENT
/// (what an operator looks for in a worker's page and `--help` does not say), and a plain page
/// per subcommand, as `git-commit.1` is to `git.1`.
fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    for sub in command.get_subcommands() {
        let name = format!("{BIN}-{}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().display_name(name))
            .source(source())
            .manual("User Commands");
        page.generate_to(dir)?;
    }
    let page = clap_mangen::Man::new(command)
        .source(source())
        .manual("User Commands");
    let mut file = fs::File::create(dir.join(page.get_filename()))?;
    page.render_title(&mut file)?;
    page.render_name_section(&mut file)?;
    page.render_synopsis_section(&mut file)?;
    page.render_description_section(&mut file)?;
    page.render_options_section(&mut file)?;
    page.render_subcommands_section(&mut file)?;
    file.write_all(extra_sections().as_bytes())?;
    page.render_version_section(&mut file)?;
    file.flush()
}

fn source() -> String {
    format!("{BIN} {}", env!("CARGO_PKG_VERSION"))
}

/// The sections that are not in the command line's help, in roff.
fn extra_sections() -> String {
    let mut roff = roff::Roff::new();
    section(
        &mut roff,
        "EXIT STATUS",
        &[
            (
                "0",
                "a clean stop (SIGTERM, SIGINT, SIGHUP or SIGQUIT), or a command that succeeded",
            ),
            (
                "1",
                "an error: one line on stderr names the file, setting, host or table, and the fix; `check` found a problem; `status` found the workers degraded, or could not read a fact that decides it",
            ),
            ("2", "a usage mistake"),
            (
                "130",
                "a second stop signal forced the exit before the orders received were written",
            ),
        ],
    );
    section(
        &mut roff,
        "FILES",
        &[
            (
                "the app's .env (--env)",
                "read with phpdotenv's rules; its folder is the app root, whose \
                 bootstrap/cache/config.php or config/*.php are read as Laravel reads them",
            ),
            (
                "/usr/lib/systemd/system/order-expire.service",
                "the systemd unit; set the .env path and the user with systemctl edit order-expire",
            ),
            (
                "/usr/share/doc/order-expire/examples/",
                "order-expire.env (the ORDER_EXPIRE_* settings and their defaults), a supervisor \
                 program, Prometheus alert rules and a Grafana dashboard",
            ),
        ],
    );
    section(
        &mut roff,
        "ENVIRONMENT",
        &[
            (
                "RUST_LOG",
                "the log level (info by default), e.g. RUST_LOG=debug; -v and -vv win over it",
            ),
            (
                "any .env variable",
                "a variable set in the process environment wins over the .env, as in Laravel; \
                 command-line flags win over both",
            ),
        ],
    );
    roff.to_roff()
}

/// A section of tagged paragraphs, as man pages list exit codes and files.
fn section(roff: &mut roff::Roff, title: &str, items: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", [] as [&str; 0]);
        roff.text([roff::bold(*tag)]);
        roff.text([roff::roman(*text)]);
    }
}
