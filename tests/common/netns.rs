//! Kernel-level network faults, in a network namespace of the test's own: a namespace joined to
//! this one by a veth pair (10.x.y.1 here, 10.x.y.2 there), a database server started inside it
//! ([`super::MariaServer::start_in`]), and `iptables` rules in that namespace only: packets
//! dropped (a partition: nothing closes, nothing answers), dropped at random (loss), or answered
//! with a reset. Nothing outside the pair is touched; the namespace and the pair are deleted on
//! drop, and every rule with them. `tc netem` (delay, loss by the qdisc) needs a kernel module
//! this machine's kernel may lack, so delays come from the TCP proxy instead
//! ([`super::fault_proxy`]).
//!
//! Needs root, `ip` (iproute2) and `iptables` (both installed by `scripts/lib/services.sh`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair to this one.
pub struct NetNs {
    pub name: String,
    host_if: String,
    /// This side's address.
    pub host_ip: Ipv4Addr,
    /// The namespace's address.
    pub ns_ip: Ipv4Addr,
}

/// Runs `args` (`ip ...`, `iptables ...`), bounded; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) {
    let mut command = Command::new(program);
    command.args(args);
    let output = super::run_bounded(command, Duration::from_secs(20));
    assert!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl NetNs {
    /// Creates the namespace and the pair, addresses up, loopback up inside.
    pub fn create() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id();
        // A /30 of its own per namespace: 10.<200 + pid bits>.<counter and pid bits>.0/30.
        let second = 200 + (id % 50) as u8;
        let third = ((id / 50) % 64) as u8;
        let fourth = ((n % 64) * 4) as u8;
        let name = format!("oe{id}n{n}");
        let host_if = format!("oe{id}h{n}");
        let ns_if = format!("oe{id}p{n}");
        let host_ip = Ipv4Addr::new(10, second, third, fourth + 1);
        let ns_ip = Ipv4Addr::new(10, second, third, fourth + 2);
        run("ip", &["netns", "add", &name]);
        let netns = Self {
            name,
            host_if,
            host_ip,
            ns_ip,
        };
        netns.exec(&["ip", "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "link",
                "add",
                &netns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
            ],
        );
        run("ip", &["link", "set", &ns_if, "netns", &netns.name]);
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{host_ip}/30"),
                "dev",
                &netns.host_if,
            ],
        );
        run("ip", &["link", "set", &netns.host_if, "up"]);
        netns.exec(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        netns.exec(&["ip", "link", "set", &ns_if, "up"]);
        netns
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Every TCP packet to `port` inside the namespace dropped: a partition behind which
    /// nothing closes and nothing answers.
    pub fn drop_port(&self, port: u16) {
        let port = port.to_string();
        self.exec(&[
            "iptables", "-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "DROP",
        ]);
    }

    /// One TCP packet in `percent` to and from `port` dropped at random, both ways.
    pub fn lose(&self, port: u16, percent: u32) {
        let port = port.to_string();
        let p = format!("{:.2}", f64::from(percent) / 100.0);
        for (chain, side) in [("INPUT", "--dport"), ("OUTPUT", "--sport")] {
            self.exec(&[
                "iptables",
                "-A",
                chain,
                "-p",
                "tcp",
                side,
                &port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ]);
        }
    }

    /// Every TCP packet to `port` answered with a reset.
    pub fn reset_port(&self, port: u16) {
        let port = port.to_string();
        self.exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]);
    }

    /// Every rule taken away.
    pub fn heal(&self) {
        self.exec(&["iptables", "-F"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; deleting the namespace ends what runs in it only
        // when nothing does (the server is stopped by its own drop first).
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
