//! The messaging workload (`--layer broker`) as CI runs it: a fixed sweep with brokers, a name
//! server and producers over every replica, and exact replay of one seed.

use std::process::Command;

fn simulation(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_simulation"))
        .args(args)
        .output()
        .expect("the simulation binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("a JSON line");
    serde_json::from_str(line).expect("the last line is JSON")
}

/// Sweeps `seeds` of the messaging workload with `mutant` on: some seed fails naming
/// `invariant`, and the first failing seed fails the same way alone.
fn mutant_is_caught(mutant: &str, seeds: &str, invariant: &str) {
    let (_, stdout, stderr) =
        simulation(&["--seeds", seeds, "--layer", "broker", "--mutant", mutant]);
    let summary = last_json(&stdout);
    let failed = summary["failed_seeds"].as_array().expect("failed seeds");
    assert!(
        !failed.is_empty(),
        "mutant {mutant} was not caught in seeds {seeds}: {summary}"
    );
    assert!(
        stderr.contains(invariant),
        "the violation names {invariant}:\n{stderr}"
    );
    let seed = failed[0].as_u64().expect("a seed").to_string();
    let (ok, replay, _) = simulation(&["--seed", &seed, "--layer", "broker", "--mutant", mutant]);
    assert!(!ok, "seed {seed} must fail again alone");
    let violation = last_json(&replay)["violation"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(violation.starts_with(invariant), "{violation}");
}

/// A fixed sweep of the messaging workload finds no violation, under every kind of network
/// fault (between replicas, and between replicas and the client hosts and the name server),
/// crash and disk fault it injects.
#[test]
fn broker_fixed_seed_sweep_finds_no_violation() {
    let (ok, stdout, stderr) = simulation(&["--seeds", "0..40", "--layer", "broker"]);
    assert!(ok, "{stderr}");
    let summary = last_json(&stdout);
    assert_eq!(summary["seeds"], 40);
    assert_eq!(
        summary["failures"], 0,
        "failed: {}\n{stderr}",
        summary["failed_seeds"]
    );
    for kind in [
        "partition",
        "partition_oneway",
        "isolation",
        "isolation_deaf",
        "isolation_mute",
        "hold",
        "message_loss",
        "crash",
        "crash_long",
        "delay",
        "power_cut",
        "storage_stop",
        "sync_failures",
        "torn_sectors",
        "corrupt_reads",
        "partition_client",
        "hold_namesrv",
        "partition_namesrv",
    ] {
        assert!(
            summary["faults"][kind].as_u64().unwrap_or(0) > 0,
            "no {kind} injected: {summary}"
        );
    }
}

/// One seed of the messaging workload run twice, each in a fresh process, gives the same report
/// and the same trace hash, and acknowledged messages.
#[test]
fn broker_seed_replays_bit_for_bit() {
    let (ok, first, stderr) = simulation(&["--seed", "3", "--layer", "broker"]);
    assert!(ok, "{stderr}");
    let (_, second, _) = simulation(&["--seed", "3", "--layer", "broker"]);
    assert_eq!(
        first, second,
        "seed 3 of the broker layer must replay exactly"
    );
    let report = last_json(&first);
    assert!(report["acked"].as_u64().unwrap_or(0) > 0, "{report}");
    let (_, other, _) = simulation(&["--seed", "4", "--layer", "broker"]);
    assert_ne!(report["trace_hash"], last_json(&other)["trace_hash"]);
}

/// Without `--layer`, a seed runs the ledger workload exactly as before.
#[test]
fn ledger_layer_stays_the_default() {
    let (ok, ledger, _) = simulation(&["--seed", "3"]);
    assert!(ok);
    let (_, broker, _) = simulation(&["--seed", "3", "--layer", "ledger"]);
    assert_eq!(ledger, broker, "the ledger workload stays the default");
}

/// Seeds of the messaging workload that found bugs, each fixed since (the fault schedule has
/// changed since they were found, so each is also covered by a test of its own):
/// - 210, 264: a follower truncated an uncommitted entry that had rolled into a new segment and
///   wrote the next leader's entry there (position 65536), where the others wrote it at the end
///   of the previous segment (65399): committed bytes differed (dledger's
///   `truncating_a_rolled_entry_puts_the_next_one_where_every_replica_does`).
/// - 161, 311, 371: a store had applied entries its own log had not synced; after a power cut
///   the ledger took the store's applied index as purged and appended after the shorter log,
///   so ConsumeQueue units pointed at other bytes (dledger's
///   `state_past_the_recovered_log_is_discarded`, store's
///   `discard_forgets_everything_applied_durably`).
/// - 72: after lost messages to the name server, the broker kept registering over a dead
///   connection, and the name server never listed the new leader.
/// - 399: a read returned damaged bytes during recovery; the replica took the synced,
///   acknowledged entry 393 for a torn tail, cut it, and the next leader (elected with its
///   vote) overwrote a committed entry. Recovery now reads a damaged entry twice before cutting.
/// - 18 (with retention in the workload): a read of a timer unit returned a flipped bit in its
///   commit-log offset; the scheduler found no record there and dropped the scheduled message
///   for good. A due message is now read again (unit and record) before it is dropped.
#[test]
fn broker_seeds_that_found_bugs_pass() {
    for seed in ["18", "72", "161", "210", "264", "311", "371", "399"] {
        let (ok, _, stderr) = simulation(&["--seed", seed, "--layer", "broker"]);
        assert!(ok, "seed {seed}: {stderr}");
    }
}

/// With check-quorum switched off (a leader that no quorum answers goes on claiming writes),
/// the messaging workload's sweep finds a broker serving writes past its lease, names the
/// invariant, and the seed fails the same way alone.
#[test]
fn broker_without_check_quorum_is_caught() {
    mutant_is_caught("ignore-quorum-loss", "0..30", "no_writes_without_quorum");
}

/// With the scheduler delivering half a second early (mutant `deliver-early`), the messaging
/// workload's sweep finds a scheduled message stored or received before it was due, names the
/// invariant, and the seed fails the same way alone.
#[test]
fn scheduler_delivering_early_is_caught() {
    mutant_is_caught("deliver-early", "0..10", "scheduled_not_before_due");
}

/// With retention cutting segments whatever their age (mutant `purge-unexpired`), the messaging
/// workload's sweep finds a queue cut past a message younger than the retention period, names
/// the invariant, and the seed fails the same way alone.
#[test]
fn retention_cutting_unexpired_segments_is_caught() {
    mutant_is_caught("purge-unexpired", "0..10", "retention_only_expired");
}

/// With a broker storing a send on a full disk before refusing it (mutant
/// `store-refused-sends`), the messaging workload's sweep finds a refused message that consumers
/// pulled, names the invariant, and the seed fails the same way alone.
#[test]
fn sends_stored_despite_a_full_disk_are_caught() {
    mutant_is_caught("store-refused-sends", "0..10", "refused_not_stored");
}

/// With END_TRANSACTION committing without recording the half message's outcome (mutant
/// `commit-without-outcome`), a commit the workload sends twice stores the message twice: the
/// messaging workload's sweep finds a committed transaction visible at two places, names the
/// invariant, and the seed fails the same way alone.
#[test]
fn commits_without_their_outcome_are_caught() {
    mutant_is_caught(
        "commit-without-outcome",
        "0..10",
        "transaction_visible_once",
    );
}

/// With the check service never sending CHECK_TRANSACTION_STATE (mutant `checks-unsent`), a
/// transaction whose producer never answered stays half: the messaging workload's sweep finds a
/// committed transaction that never reached a consumer after healing, names the invariant, and
/// the seed fails the same way alone.
#[test]
fn unsent_transaction_checks_are_caught() {
    mutant_is_caught("checks-unsent", "0..10", "transaction_visible_after_commit");
}
