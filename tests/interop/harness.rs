//! The interop harness against `capture.py` (no raftmq code involved): if these fail, the
//! Python side is broken, not the broker.

use std::time::Duration;

use serde_json::Value;

use crate::python::{Capture, PyProcess, ScriptOutput, venv_python};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Parses every stdout line of client.py as JSON.
fn events(out: &ScriptOutput) -> Vec<Value> {
    out.stdout
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// The venv builds (or is reused) and `client.py probe` imports the wrapper and loads
/// librocketmq.so from it.
#[test]
fn venv_loads_librocketmq() {
    let python = venv_python();
    assert!(python.is_file(), "{} exists", python.display());
    let out = PyProcess::client(&["probe"], &[]).wait_success(RUN_TIMEOUT);
    let probe = &events(&out)[0];
    assert_eq!(probe["event"], "probe");
    assert!(
        probe["library"]
            .as_str()
            .is_some_and(|l| l.ends_with("librocketmq.so")),
        "{probe}"
    );
}

/// Every send mode of the C++ producer is acknowledged by capture.py: one `sent` line per
/// message and a summary with all of them acked; the frames arrive as SEND_MESSAGE (code 10).
#[test]
fn producer_every_mode_is_acked_by_capture_server() {
    let log = crate::python::target_dir()
        .join("interop-tmp")
        .join(format!("harness-produce-{}.jsonl", std::process::id()));
    let log_arg = log.to_string_lossy().into_owned();
    let capture = Capture::start(&["--store", "--log", &log_arg]);
    for mode in ["sync", "async", "oneway", "orderly", "batch"] {
        let topic = format!("HarnessTopic-{mode}");
        let args = [
            "produce",
            "--namesrv",
            &capture.addr,
            "--topic",
            &topic,
            "--group",
            "harness-pg",
            "--count",
            "3",
            "--mode",
            mode,
            "--tags",
            "TagA",
            "--keys-prefix",
            "k-",
            "--props",
            "color=red",
        ];
        let out = PyProcess::client(&args, &[]).wait_success(RUN_TIMEOUT);
        let sent = events(&out);
        assert_eq!(of_kind(&sent, "sent").len(), 3, "{mode}: {sent:?}");
        let summary = of_kind(&sent, "summary");
        assert_eq!(summary[0]["acked"], 3, "{mode}: {sent:?}");
    }
    drop(capture);
    let frames = std::fs::read_to_string(&log).expect("capture log");
    let _ = std::fs::remove_file(&log); // Under target/; best effort.
    let sends: Vec<Value> = frames
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|f| f["event"] == "frame" && f["header"]["code"] == 10)
        .collect();
    // 3 each for sync/async/oneway/orderly, 1 frame for the batch of 3.
    assert_eq!(sends.len(), 13, "SEND_MESSAGE frames: {sends:?}");
    assert!(sends.iter().all(|f| f["header"]["language"] == "CPP"));
}

/// A clustering push consumer and a pull consumer both receive what the producer stored in
/// capture.py, with keys, tags and user properties intact.
#[test]
fn consumers_receive_from_capture_server() {
    let capture = Capture::start(&["--store"]);
    let produce = [
        "produce",
        "--namesrv",
        &capture.addr,
        "--topic",
        "HarnessConsume",
        "--group",
        "harness-pg",
        "--count",
        "4",
        "--tags",
        "TagA",
        "--keys-prefix",
        "key-",
        "--props",
        "color=blue",
    ];
    PyProcess::client(&produce, &[]).wait_success(RUN_TIMEOUT);

    let push = [
        "push-consume",
        "--namesrv",
        &capture.addr,
        "--topic",
        "HarnessConsume",
        "--group",
        "harness-push",
        "--expect",
        "4",
        "--timeout",
        "60",
        "--prop-keys",
        "color",
    ];
    let out = PyProcess::client(&push, &[]).wait_success(RUN_TIMEOUT);
    let pushed = events(&out);
    let received = of_kind(&pushed, "received");
    assert_eq!(received.len(), 4, "{pushed:?}");
    for msg in &received {
        assert_eq!(msg["topic"], "HarnessConsume");
        assert_eq!(msg["tags"], "TagA");
        assert_eq!(msg["properties"]["color"], "blue");
        assert!(
            msg["keys"].as_str().is_some_and(|k| k.starts_with("key-")),
            "{msg}"
        );
    }

    let pull = [
        "pull-consume",
        "--namesrv",
        &capture.addr,
        "--topic",
        "HarnessConsume",
        "--group",
        "harness-pull",
        "--expect",
        "4",
        "--timeout",
        "60",
    ];
    let out = PyProcess::client(&pull, &[]).wait_success(RUN_TIMEOUT);
    assert_eq!(
        of_kind(&events(&out), "received").len(),
        4,
        "{:?}",
        out.stdout
    );
}
