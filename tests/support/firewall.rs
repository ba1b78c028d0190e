//! iptables rules that cut network paths between processes of one test, and only those: each
//! rule matches the sending process's uid (`-m owner`) and the ports of the path, carries a
//! comment naming this test process, and is deleted again, exactly as added, when the
//! [`Firewall`] is cleared or dropped. Needs root (CI runs as root); installs Debian's
//! `iptables` when it is missing, and fails the test (never skips it) when it cannot.
//!
//! Include it with `#[path = "support/firewall.rs"] mod firewall;`.

#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Command;

/// One replica as the firewall sees it: the uid its process runs as, its address and Raft port.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The uid of its process.
    pub uid: u32,
    /// The address it listens on.
    pub ip: IpAddr,
    /// Its Raft port.
    pub raft_port: u16,
}

/// Which direction of a leader's Raft traffic to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nothing goes between the leader and the others.
    Both,
    /// The leader sends, but hears nothing back: no answer and no request reaches it.
    Deaf,
    /// The leader hears, but what it sends is dropped: its requests and its answers.
    Mute,
}

/// Rules added by this test process.
pub struct Firewall {
    tag: String,
    mark: u32,
    /// (table, rule spec) in the order added.
    added: Vec<(&'static str, Vec<String>)>,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

fn iptables_runs() -> bool {
    Command::new("iptables")
        .args(["-w", "-S", "OUTPUT"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Installs Debian's `iptables` when the command is missing.
fn ensure_iptables() {
    if iptables_runs() {
        return;
    }
    let install = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap_or_else(|e| panic!("apt-get cannot run ({e}): iptables is needed"))
    };
    let mut out = install(&["install", "-y", "-q", "iptables"]);
    if !out.status.success() {
        // A fresh machine may have no package lists yet.
        install(&["update", "-q"]);
        out = install(&["install", "-y", "-q", "iptables"]);
    }
    assert!(
        out.status.success() && iptables_runs(),
        "installing iptables failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Firewall {
    /// A firewall with no rule yet. Panics unless running as root with a working `iptables`
    /// (installed here when missing).
    pub fn new() -> Firewall {
        assert!(
            is_root(),
            "this test cuts network paths with iptables and must run as root (as CI does)"
        );
        ensure_iptables();
        let pid = std::process::id();
        Firewall {
            tag: format!("raftmq-test-{pid}"),
            mark: 0x5200_0000 | (pid & 0xffff),
            added: Vec::new(),
        }
    }

    fn run(&self, action: &str, table: &str, spec: &[String]) -> Result<(), String> {
        let out = Command::new("iptables")
            .args(["-w", "-t", table, action, "OUTPUT"])
            .args(spec)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn add(&mut self, table: &'static str, spec: &[String]) {
        let mut spec = spec.to_vec();
        spec.extend(["-m", "comment", "--comment", &self.tag].map(String::from));
        if let Err(err) = self.run("-A", table, &spec) {
            panic!("iptables -t {table} -A OUTPUT {spec:?} failed: {err}");
        }
        self.added.push((table, spec));
    }

    /// Cuts `leader`'s Raft traffic to and from each of `others` in direction `cut`. Loopback
    /// packets pass OUTPUT once, so every rule is there; a rule matches the uid of the process
    /// that sends.
    pub fn cut_raft(&mut self, leader: Peer, others: &[Peer], cut: Cut) {
        let drop_rule = |uid: u32, addr: (&str, IpAddr), port: (&str, u16)| -> Vec<String> {
            [
                "-p",
                "tcp",
                "-m",
                "owner",
                "--uid-owner",
                &uid.to_string(),
                addr.0,
                &addr.1.to_string(),
                port.0,
                &port.1.to_string(),
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()
        };
        if cut != Cut::Deaf {
            // The leader's answers to requests (only its group's replicas dial its Raft port).
            self.add(
                "filter",
                &drop_rule(leader.uid, ("-s", leader.ip), ("--sport", leader.raft_port)),
            );
        }
        for other in others {
            if cut != Cut::Deaf {
                // The leader's requests to the other.
                self.add(
                    "filter",
                    &drop_rule(leader.uid, ("-d", other.ip), ("--dport", other.raft_port)),
                );
            }
            if cut != Cut::Mute {
                // The other's requests to the leader.
                self.add(
                    "filter",
                    &drop_rule(other.uid, ("-d", leader.ip), ("--dport", leader.raft_port)),
                );
                // The other's answers on connections the leader opened: those connections are
                // marked by the leader's packets, and the other's packets on them dropped.
                let mark = format!("{:#x}", self.mark);
                self.add(
                    "mangle",
                    &[
                        "-p",
                        "tcp",
                        "-m",
                        "owner",
                        "--uid-owner",
                        &leader.uid.to_string(),
                        "-d",
                        &other.ip.to_string(),
                        "--dport",
                        &other.raft_port.to_string(),
                        "-j",
                        "CONNMARK",
                        "--set-mark",
                        &mark,
                    ]
                    .map(String::from),
                );
                self.add(
                    "filter",
                    &[
                        "-p",
                        "tcp",
                        "-m",
                        "connmark",
                        "--mark",
                        &mark,
                        "-m",
                        "owner",
                        "--uid-owner",
                        &other.uid.to_string(),
                        "-j",
                        "DROP",
                    ]
                    .map(String::from),
                );
            }
        }
    }

    /// Deletes every rule this firewall added, newest first. Returns the failures.
    pub fn clear(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some((table, spec)) = self.added.pop() {
            if let Err(err) = self.run("-D", table, &spec) {
                failures.push(format!("iptables -t {table} -D OUTPUT {spec:?}: {err}"));
            }
        }
        failures
    }

    /// Rules of this firewall still in the kernel's tables (to check that none is left).
    pub fn remaining(&self) -> usize {
        ["filter", "mangle"]
            .iter()
            .map(|table| {
                Command::new("iptables")
                    .args(["-w", "-t", table, "-S", "OUTPUT"])
                    .output()
                    .map(|out| {
                        String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .filter(|line| line.contains(&self.tag))
                            .count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for failure in self.clear() {
            eprintln!("firewall cleanup: {failure}");
        }
    }
}
