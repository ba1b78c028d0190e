#!/usr/bin/env python3
"""Drive the real Apache RocketMQ C++ client (PyPI `rocketmq` 0.4.4, librocketmq.so) from tests.

Subcommands (all print JSON lines on stdout, diagnostics on stderr):

  probe          import the wrapper, load librocketmq.so, print one line and exit 0
  produce        send --count messages with --mode sync|async|oneway|orderly|batch (each
                 waiting --delay-level, if given); one {"event":"sent",...} line per
                 acknowledged message, then {"event":"summary"}
  push-consume   PushConsumer (clustering|broadcasting, --orderly), one {"event":"received"}
                 line per delivered message (or {"event":"reconsume_later"} for the first
                 --reconsume-later deliveries, answered RECONSUME_LATER), exits after --expect
                 "received" messages or --timeout seconds
  pull-consume   PullConsumer over every queue of the topic (asking for its route until
                 --timeout if it has none yet), one {"event":"pull"} line per pull call and one
                 {"event":"received"} line per message

Times are wall-clock epoch milliseconds (time.time()), so they compare between processes on one
machine: "sent" lines carry send_ms (just before the send call) and at_ms (once it returned or
its callback came); "received" / "reconsume_later" lines carry received_ms (when the message
reached the listener, or for the pull consumer when the pull returned it).

Exit codes: 0 success; 1 some sends failed; 2 bad usage or client error; 3 consumer timed out
before --expect messages.

What the wrapper can and cannot tell (read from site-packages/rocketmq/client.py + ffi.py):
  * SendResult is (status, msg_id, offset): no queue id. For --mode orderly the queue id is the
    one our selector chose; otherwise it is reported as null.
  * oneway sends have no result: one line with status "ONEWAY" per message after the call returns.
  * Message.set_body / RecvMessage.body go through C strings: bodies are cut at the first NUL
    byte, so bodies here are text.
  * Received messages expose topic, tags, keys, body, id, queue_id, queue_offset,
    commit_log_offset, reconsume_times, born/store timestamps, store_size, delay_time_level and
    get_property(key). There is no way to list all properties, so a fixed set of well-known keys
    plus --prop-keys are queried and those that are non-empty are printed.
  * The wrapper's subscribe() callback re-raises a consumer exception from a `finally` block,
    so RECONSUME_LATER is never returned; this script registers its own callback that returns
    0 (CONSUME_SUCCESS) or 1 (RECONSUME_LATER) explicitly (--reconsume-later N).
  * SetProducerLogPath is a no-op in the C API: librocketmq writes its log to
    $HOME/logs/rocketmq-cpp/<pid>_rocketmq-cpp.log.0 and broadcasting offsets to
    $HOME/.rocketmq_offsets; run this script with HOME set to a temp dir.
  * msg_id in a send result is the client-generated UNIQ_KEY (empty for send_batch), not the
    broker's offset msg id; queue_offset is the broker's queueOffset (the first one for a batch).
  * A failed sync/batch/orderly send is retried by librocketmq and then reported as
    "No route info of this topic"; async failures arrive with an empty message. The reason is in
    the librocketmq log.
  * Received messages: msg_id is UNIQ_KEY if the message has one, else the offset msg id the
    client computes from storeHost + commitLogOffset; a message from %RETRY%<group> is reported
    under its RETRY_TOPIC property.

The last stdout line is always the summary (printed after the client shut down); for consumers
"received" counts every delivery, including any made while the client was stopping.
"""

import argparse
import ctypes
import json
import os
import sys
import threading
import time

STDOUT_LOCK = threading.Lock()

WELL_KNOWN_PROPS = [
    "UNIQ_KEY", "KEYS", "TAGS", "WAIT", "DELAY", "RETRY_TOPIC", "REAL_TOPIC", "REAL_QID",
    "TRAN_MSG", "PGROUP", "MIN_OFFSET", "MAX_OFFSET", "ORIGIN_MESSAGE_ID", "RECONSUME_TIME",
    "MAX_RECONSUME_TIMES", "CONSUME_START_TIME", "MSG_REGION", "TRACE_ON", "CLUSTER",
]

LOG_LEVELS = {"fatal": 1, "error": 2, "warn": 3, "info": 4, "debug": 5, "trace": 6}


def emit(obj):
    line = json.dumps(obj, ensure_ascii=False, sort_keys=True)
    with STDOUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def now_ms():
    """Wall-clock epoch milliseconds: the one clock for send and receive times, comparable
    between client.py processes on one machine."""
    return int(time.time() * 1000)


def note(text):
    sys.stderr.write("client.py: %s\n" % text)
    sys.stderr.flush()


def text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def load():
    """Import the wrapper; fails loudly (exit 2) if the package or librocketmq.so is missing."""
    try:
        import rocketmq.client as client
        from rocketmq import ffi
    except Exception as exc:  # ImportError, OSError from dlopen
        note("cannot import rocketmq (pip install -r tests/interop/requirements.txt): %r" % exc)
        sys.exit(2)
    return client, ffi


def cpp_log_dir():
    return os.path.join(os.environ.get("HOME", "~"), "logs", "rocketmq-cpp")


def finish(code, shutdown, timeout_s, summary=None):
    """Shut the client down (it commits offsets, unregisters) with a watchdog, print the summary
    line (callable -> dict) last, then exit with `code`."""
    done = threading.Event()

    def run():
        try:
            shutdown()
        except Exception as exc:
            note("shutdown failed: %r" % exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    clean = done.wait(timeout_s)
    if not clean:
        note("shutdown did not finish within %.0f s; exiting anyway" % timeout_s)
    if summary is not None:
        emit(dict(summary(), shutdown_clean=clean))
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the wrapper's __del__ (a second shutdown + destroy) at interpreter exit.
    os._exit(code)


def parse_props(pairs):
    props = []
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit("--props expects k=v, got %r" % pair)
        k, v = pair.split("=", 1)
        props.append((k, v))
    return props


def message_record(msg, prop_keys):
    props = {}
    for key in prop_keys:
        val = msg.get_property(key)
        if val:
            props[key] = text(val)
    return {
        "topic": text(msg.topic),
        "tags": text(msg.tags),
        "keys": text(msg.keys),
        "body": text(msg.body),
        "msg_id": text(msg.id),
        "queue_id": msg.queue_id,
        "queue_offset": msg.queue_offset,
        "commit_log_offset": msg.commit_log_offset,
        "reconsume_times": msg.reconsume_times,
        "born_timestamp": msg.born_timestamp,
        "store_timestamp": msg.store_timestamp,
        "store_size": msg.store_size,
        "delay_time_level": msg.delay_time_level,
        "properties": props,
    }


# ---------------------------------------------------------------------------------------------
def cmd_probe(args):
    client, ffi = load()
    emit({"event": "probe", "ok": True, "library": ffi._DYLIB_PATH,
          "python": sys.version.split()[0],
          "wrapper": os.path.dirname(os.path.abspath(client.__file__))})
    return 0


def cmd_produce(args):
    client, ffi = load()
    props = parse_props(args.props)
    producer = client.Producer(args.group, timeout=args.send_timeout_ms,
                               max_message_size=args.max_message_size)
    producer.set_namesrv_addr(args.namesrv)
    ffi.dll.SetProducerLogLevel(producer._handle, LOG_LEVELS[args.log_level])
    producer.start()
    emit({"event": "started", "role": "producer", "group": args.group})

    def make(i):
        msg = client.Message(args.topic)
        key = "%s%d" % (args.keys_prefix, i) if args.keys_prefix is not None else None
        if key is not None:
            msg.set_keys(key)
        if args.tags is not None:
            msg.set_tags(args.tags)
        for k, v in props:
            msg.set_property(k, v)
        if args.delay_level:
            msg.set_delay_time_level(args.delay_level)
        body = "%s%d" % (args.body_prefix, i)
        if args.body_size and len(body) < args.body_size:
            body += "x" * (args.body_size - len(body))
        msg.set_body(body)
        return msg, key

    acked = failed = 0
    started = time.time()
    base = {"mode": args.mode, "topic": args.topic}

    def ok(i, key, res, queue_id=None, send_ms=None):
        emit(dict(base, event="sent", index=i, key=key, status=res.status.name,
                  msg_id=res.msg_id, queue_offset=res.offset, queue_id=queue_id,
                  send_ms=send_ms, at_ms=now_ms()))

    def fail(i, key, exc):
        msg = exc.args[0] if exc.args else ""
        emit(dict(base, event="failed", index=i, key=key, error=text(msg),
                  error_type=type(exc).__name__, at_ms=now_ms()))

    def indexes():
        # --duration: send until that many seconds have passed (--count is then ignored),
        # pausing --interval-ms between sends; for failover runs.
        if args.duration is None:
            for i in range(args.count):
                yield i
            return
        i = 0
        while time.time() - started < args.duration:
            yield i
            i += 1
            if args.interval_ms:
                time.sleep(args.interval_ms / 1000.0)

    if args.mode in ("sync", "orderly"):
        for i in indexes():
            msg, key = make(i)
            chosen = {}

            def selector(mq_size, _msg, arg, chosen=chosen):
                q = ctypes.cast(arg, ctypes.POINTER(ctypes.c_int))[0] % mq_size
                chosen["queue_id"] = q
                return q

            try:
                send_ms = now_ms()
                if args.mode == "sync":
                    res = producer.send_sync(msg)
                else:
                    order_arg = args.order_arg if args.order_arg is not None else i
                    res = producer.send_orderly(msg, order_arg, queue_selector=selector)
                ok(i, key, res, chosen.get("queue_id"), send_ms)
                acked += 1
            except Exception as exc:
                fail(i, key, exc)
                failed += 1
    elif args.mode == "oneway":
        for i in range(args.count):
            msg, key = make(i)
            try:
                send_ms = now_ms()
                producer.send_oneway(msg)
                emit(dict(base, event="sent", index=i, key=key, status="ONEWAY", msg_id=None,
                          queue_offset=None, queue_id=None, send_ms=send_ms, at_ms=now_ms()))
                acked += 1
            except Exception as exc:
                fail(i, key, exc)
                failed += 1
    elif args.mode == "async":
        lock = threading.Condition()
        state = {"done": 0, "acked": 0, "failed": 0}
        keep = []  # messages must outlive their asynchronous send

        def completed(success):
            with lock:
                state["done"] += 1
                state["acked" if success else "failed"] += 1
                lock.notify_all()

        for i in range(args.count):
            msg, key = make(i)
            keep.append(msg)

            send_ms = now_ms()

            def on_ok(res, i=i, key=key, send_ms=send_ms):
                ok(i, key, res, send_ms=send_ms)
                completed(True)

            def on_err(exc, i=i, key=key):
                fail(i, key, exc)
                completed(False)

            try:
                producer.send_async(msg, on_ok, on_err)
            except Exception as exc:
                fail(i, key, exc)
                completed(False)
        deadline = time.time() + args.timeout
        with lock:
            while state["done"] < args.count and time.time() < deadline:
                lock.wait(max(0.0, deadline - time.time()))
        acked, failed = state["acked"], state["failed"]
        failed += args.count - state["done"]  # callbacks that never came
    elif args.mode == "batch":
        i = 0
        while i < args.count:
            n = min(args.batch_size or args.count, args.count - i)
            batch = [make(j) for j in range(i, i + n)]
            try:
                send_ms = now_ms()
                res = producer.send_batch([m for m, _ in batch])
                for j, (_, key) in enumerate(batch):
                    ok(i + j, key, res, send_ms=send_ms)
                acked += n
            except Exception as exc:
                for j, (_, key) in enumerate(batch):
                    fail(i + j, key, exc)
                failed += n
            i += n

    elapsed_ms = int((time.time() - started) * 1000)
    if args.linger > 0:
        # Keep the started producer alive (heartbeats, route polling) before shutting down.
        threading.Event().wait(args.linger)
    expected = acked + failed if args.duration is not None else args.count
    finish(0 if failed == 0 and acked == expected else 1, producer.shutdown,
           args.shutdown_timeout,
           lambda: dict(base, event="summary", sent=expected, acked=acked, failed=failed,
                        elapsed_ms=elapsed_ms, cpp_log_dir=cpp_log_dir()))


# ---------------------------------------------------------------------------------------------
def cmd_push_consume(args):
    client, ffi = load()
    model = ffi.MessageModel.BROADCASTING if args.model == "broadcasting" else \
        ffi.MessageModel.CLUSTERING
    consumer = client.PushConsumer(args.group, orderly=args.orderly, message_model=model)
    consumer.set_namesrv_addr(args.namesrv)
    ffi.dll.SetPushConsumerLogLevel(consumer._handle, LOG_LEVELS[args.log_level])
    if args.thread_count:
        consumer.set_thread_count(args.thread_count)
    if args.instance_name:
        consumer.set_instance_name(args.instance_name)
    prop_keys = WELL_KNOWN_PROPS + [k for k in (args.prop_keys or "").split(",") if k]

    lock = threading.Condition()
    state = {"received": 0, "ids": set(), "later": 0}

    def on_message(_consumer_ptr, msg_ptr):
        # Raw C callback: return 0 = CONSUME_SUCCESS, 1 = RECONSUME_LATER.
        received_ms = now_ms()
        try:
            rec = dict(message_record(client.RecvMessage(msg_ptr), prop_keys),
                       received_ms=received_ms)
        except Exception as exc:
            note("cannot read message: %r" % exc)
            return 1
        with lock:
            if state["later"] < args.reconsume_later:
                state["later"] += 1
                emit(dict(rec, event="reconsume_later"))
                return 1
            state["received"] += 1
            state["ids"].add(rec["msg_id"])
            lock.notify_all()
        emit(dict(rec, event="received"))
        return 0

    ffi.dll.Subscribe(consumer._handle, args.topic.encode(), args.expression.encode())
    consumer._register_callback(on_message)  # keeps the CFUNCTYPE object alive
    started = time.time()
    consumer.start()
    emit({"event": "started", "role": "push-consumer", "group": args.group,
          "model": args.model, "orderly": args.orderly})
    deadline = started + args.timeout
    with lock:
        while state["received"] < args.expect and time.time() < deadline:
            lock.wait(max(0.0, deadline - time.time()))
        timed_out = state["received"] < args.expect
    elapsed_ms = int((time.time() - started) * 1000)

    def summary():
        # After shutdown: messages delivered while the client stopped are counted too (their
        # "received" lines come before this one).
        with lock:
            return {"event": "summary", "received": state["received"],
                    "unique": len(state["ids"]), "expect": args.expect, "timed_out": timed_out,
                    "elapsed_ms": elapsed_ms, "cpp_log_dir": cpp_log_dir()}

    finish(3 if timed_out else 0, consumer.shutdown, args.shutdown_timeout, summary)


# ---------------------------------------------------------------------------------------------
def cmd_pull_consume(args):
    client, ffi = load()
    consumer = client.PullConsumer(args.group)
    consumer.set_namesrv_addr(args.namesrv)
    ffi.dll.SetPullConsumerLogLevel(consumer._handle, LOG_LEVELS[args.log_level])
    consumer.start()
    emit({"event": "started", "role": "pull-consumer", "group": args.group})
    prop_keys = WELL_KNOWN_PROPS + [k for k in (args.prop_keys or "").split(",") if k]
    status_names = {s.value: s.name for s in ffi._CPullStatus}
    started = time.time()
    deadline = started + args.timeout
    received = 0
    ids = set()
    offsets = {}

    # Same calls as the wrapper's PullConsumer.pull(), unrolled so that every pull result
    # (status and offsets) is visible and the loop honours a deadline.
    queues = ctypes.POINTER(ffi._CMessageQueue)()
    size = ctypes.c_int()
    while True:
        # A topic the broker has not created yet has no route: ask again until the deadline
        # (e.g. a dead-letter topic that is made by the consumer failing its last retry).
        code = ffi.dll.FetchSubscriptionMessageQueues(consumer._handle, args.topic.encode(),
                                                       ctypes.pointer(queues),
                                                       ctypes.pointer(size))
        if code == 0 or time.time() >= deadline:
            break
        time.sleep(min(args.idle_ms / 1000.0, max(0.0, deadline - time.time())))
    if code != 0:
        err = ffi.dll.GetLatestErrorMessage()
        emit({"event": "error", "call": "FetchSubscriptionMessageQueues", "code": int(code),
              "error": text(err)})
        finish(2, consumer.shutdown, args.shutdown_timeout)
    mqs = [queues[i] for i in range(size.value)]
    emit({"event": "queues", "queues": [{"topic": text(mq.topic), "broker_name":
                                         text(mq.brokerName), "queue_id": mq.queueId}
                                        for mq in mqs]})
    while received < args.expect and time.time() < deadline:
        progressed = False
        for mq in mqs:
            if received >= args.expect or time.time() >= deadline:
                break
            offset = offsets.get(mq.queueId, args.start_offset)
            res = ffi.dll.Pull(consumer._handle, ctypes.pointer(mq), args.expression.encode(),
                               offset, args.max_num)
            status = status_names.get(res.pullStatus, str(res.pullStatus))
            emit({"event": "pull", "queue_id": mq.queueId, "offset": offset, "status": status,
                  "next_begin_offset": res.nextBeginOffset, "min_offset": res.minOffset,
                  "max_offset": res.maxOffset, "size": res.size})
            if res.pullStatus != ffi._CPullStatus.BROKER_TIMEOUT:
                offsets[mq.queueId] = res.nextBeginOffset
            if res.pullStatus == ffi._CPullStatus.FOUND:
                progressed = True
                for i in range(res.size):
                    rec = dict(message_record(client.RecvMessage(res.msgFoundList[i]),
                                              prop_keys), received_ms=now_ms())
                    received += 1
                    ids.add(rec["msg_id"])
                    emit(dict(rec, event="received"))
            ffi.dll.ReleasePullResult(res)
        if not progressed and received < args.expect:
            # Nothing new on any queue: wait a little before the next round (bounded by the
            # deadline; a pull consumer has no long polling in this client).
            time.sleep(min(args.idle_ms / 1000.0, max(0.0, deadline - time.time())))
    ffi.dll.ReleaseSubscriptionMessageQueue(queues)
    timed_out = received < args.expect
    summary = {"event": "summary", "received": received, "unique": len(ids),
               "expect": args.expect, "timed_out": timed_out,
               "offsets": {str(k): v for k, v in sorted(offsets.items())},
               "elapsed_ms": int((time.time() - started) * 1000), "cpp_log_dir": cpp_log_dir()}
    finish(3 if timed_out else 0, consumer.shutdown, args.shutdown_timeout, lambda: summary)


def main():
    ap = argparse.ArgumentParser(description="RocketMQ C++ client driver for interop tests")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--namesrv", required=True, help="name server address, ip:port")
        p.add_argument("--topic", required=True)
        p.add_argument("--group", required=True)
        p.add_argument("--log-level", choices=sorted(LOG_LEVELS), default="info",
                       help="librocketmq log level (log file under $HOME/logs/rocketmq-cpp)")
        p.add_argument("--shutdown-timeout", type=float, default=30.0,
                       help="seconds to wait for the client's shutdown before exiting")

    sub.add_parser("probe", help="import the wrapper and load librocketmq.so")

    p = sub.add_parser("produce", help="send messages")
    common(p)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--mode", choices=["sync", "async", "oneway", "orderly", "batch"],
                   default="sync")
    p.add_argument("--tags")
    p.add_argument("--keys-prefix", help="message i gets key PREFIX<i>")
    p.add_argument("--props", action="append", metavar="K=V", help="user property (repeatable)")
    p.add_argument("--delay-level", type=int, default=0)
    p.add_argument("--body-prefix", default="body-", help="message i gets body PREFIX<i>")
    p.add_argument("--body-size", type=int, default=0,
                   help="pad each body with 'x' to this many bytes (C++ compresses > 4 KiB)")
    p.add_argument("--batch-size", type=int, help="messages per send_batch (default: all)")
    p.add_argument("--order-arg", type=int,
                   help="orderly: selector argument (queue = arg %% queues); default the index")
    p.add_argument("--send-timeout-ms", type=int, default=3000)
    p.add_argument("--max-message-size", type=int,
                   help="client-side body limit in bytes (librocketmq default 131072)")
    p.add_argument("--timeout", type=float, default=60.0, help="async: seconds to wait for acks")
    p.add_argument("--duration", type=float,
                   help="sync/orderly: send for this many seconds instead of --count messages")
    p.add_argument("--interval-ms", type=int, default=0,
                   help="with --duration: pause between sends")
    p.add_argument("--linger", type=float, default=0.0,
                   help="seconds to keep the producer running after the last send")

    p = sub.add_parser("push-consume", help="PushConsumer")
    common(p)
    p.add_argument("--model", choices=["clustering", "broadcasting"], default="clustering")
    p.add_argument("--orderly", action="store_true")
    p.add_argument("--expression", default="*", help="tag expression, e.g. 'TagA || TagB'")
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--thread-count", type=int)
    p.add_argument("--instance-name")
    p.add_argument("--prop-keys", help="comma-separated extra property keys to report")
    p.add_argument("--reconsume-later", type=int, default=0,
                   help="answer RECONSUME_LATER to the first N deliveries")

    p = sub.add_parser("pull-consume", help="PullConsumer")
    common(p)
    p.add_argument("--expression", default="*")
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--max-num", type=int, default=32)
    p.add_argument("--start-offset", type=int, default=0)
    p.add_argument("--idle-ms", type=int, default=200,
                   help="pause between rounds that found nothing")
    p.add_argument("--prop-keys", help="comma-separated extra property keys to report")

    args = ap.parse_args()
    handler = {"probe": cmd_probe, "produce": cmd_produce, "push-consume": cmd_push_consume,
               "pull-consume": cmd_pull_consume}[args.cmd]
    try:
        return handler(args)
    except SystemExit:
        raise
    except Exception as exc:
        note("failed: %r" % exc)
        emit({"event": "error", "error": str(exc), "error_type": type(exc).__name__})
        sys.stdout.flush()
        os._exit(2)


if __name__ == "__main__":
    sys.exit(main())
