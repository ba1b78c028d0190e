#!/usr/bin/env python3
"""Fake RocketMQ nameserver + broker that logs every remoting frame it receives.

One TCP listener on 127.0.0.1 plays both roles: GET_ROUTEINFO_BY_TOPIC returns a route whose only
broker ("broker-a", id 0) is this same address, so a real client pointed at it as namesrv sends
its broker traffic here too.

Output (stdout, line buffered):
  READY {"addr": "127.0.0.1:PORT", "port": PORT}
then one JSON object per line for every frame received ("dir": "in") and, with --log-responses,
every frame sent ("dir": "out"). With --log FILE the frame lines go to FILE instead and only the
READY line is printed.

Frame format (PROTOCOL.md §1.2): int32 length (excl. itself) | int32 (serializeType << 24 |
headerLength) | header (JSON text or ROCKETMQ binary) | body.

Answers: 105 route (4 queues, perm 6; 1 queue for %RETRY% topics), 34 heartbeat, 10/310/320
send (a code-10 batch "batch":"1" and a zlib-compressed batch body are understood), 14 query
offset, 15 update offset, 30/31 max/min offset, 29 search offset, 11 pull, 38 consumer list,
35 unregister, 41/42 lock/unlock, 36 send back, anything else code 3. All responses: JSON header,
string ext values, version 479.

Without --store nothing is kept: SEND answers carry fake offsets, QUERY_CONSUMER_OFFSET is 22,
GET_MAX_OFFSET 0 and every pull PULL_NOT_FOUND. With --store sent messages are kept in memory and
served to pulls in the stored-message format of PROTOCOL.md §6.1 (no tag filtering: clients
re-filter), a new group's QUERY_CONSUMER_OFFSET on a non-empty queue answers 0 (as a Java broker
does), and CONSUMER_SEND_MSG_BACK copies the message to %RETRY%<group> at once (no delay level).
A pull with the suspend flag and nothing to return is held up to min(suspendTimeoutMillis,
--pull-hold-ms) and answered early when a message arrives. Like a Java broker it sends
NOTIFY_CONSUMER_IDS_CHANGED (40, oneway) to a consumer group's connections when a heartbeat adds
a client or a client unregisters or disconnects (--no-notify turns that off).

--quirk NAME (repeatable) changes the answers, to find out what the client accepts:
  binary-responses   answer with the ROCKETMQ binary header (serialize type 1)
  numeric-ext        extFields values that are integers are sent as JSON numbers, not strings
  legacy-route       route body with unquoted numeric brokerAddrs keys ({0:"ip:port"})
  no-serialize-type  omit "serializeTypeCurrentRPC" from response headers
  no-remark          omit "remark" from response headers (default: remark only on errors)
  no-ext-fields      omit "extFields" on responses that carry no header fields
  version-0          put version 0 in response headers
  send-msgid-missing SEND responses without msgId
  pull-missing-max   PULL responses without maxOffset
  send-no-reply      never answer SEND (the client's timeout path)
  send-no-ext        SEND responses without extFields (implies no-ext-fields for them)
  pull-no-ext        PULL responses without extFields (implies no-ext-fields for them)
Other knobs: --unsupported CODE (answer that request code with 3, repeatable), --send-code N
(answer every SEND with code N), --route-code N (answer every route lookup for a topic other than
TBW102 with code N), --queues N, --pull-hold-ms N, --raw (log whole frames as hex).
"""

import argparse
import json
import socket
import struct
import sys
import threading
import time
import zlib

MAGIC_V1 = 0xDAA320A7

NAMES = {
    10: "SEND_MESSAGE", 11: "PULL_MESSAGE", 12: "QUERY_MESSAGE", 14: "QUERY_CONSUMER_OFFSET",
    15: "UPDATE_CONSUMER_OFFSET", 17: "UPDATE_AND_CREATE_TOPIC", 29: "SEARCH_OFFSET_BY_TIMESTAMP",
    30: "GET_MAX_OFFSET", 31: "GET_MIN_OFFSET", 32: "GET_EARLIEST_MSG_STORETIME",
    33: "VIEW_MESSAGE_BY_ID", 34: "HEART_BEAT", 35: "UNREGISTER_CLIENT",
    36: "CONSUMER_SEND_MSG_BACK", 37: "END_TRANSACTION", 38: "GET_CONSUMER_LIST_BY_GROUP",
    39: "CHECK_TRANSACTION_STATE", 40: "NOTIFY_CONSUMER_IDS_CHANGED", 41: "LOCK_BATCH_MQ",
    42: "UNLOCK_BATCH_MQ", 46: "CHECK_CLIENT_CONFIG", 101: "GET_KV_CONFIG",
    105: "GET_ROUTEINFO_BY_TOPIC", 106: "GET_BROKER_CLUSTER_INFO", 310: "SEND_MESSAGE_V2",
    320: "SEND_BATCH_MESSAGE", 361: "LITE_PULL_MESSAGE",
}

# SEND_MESSAGE_V2 single-letter keys -> V1 names (PROTOCOL.md §3.3).
V2_KEYS = {"a": "producerGroup", "b": "topic", "c": "defaultTopic", "d": "defaultTopicQueueNums",
           "e": "queueId", "f": "sysFlag", "g": "bornTimestamp", "h": "flag", "i": "properties",
           "j": "reconsumeTimes", "k": "unitMode", "l": "maxReconsumeTimes", "m": "batch",
           "n": "brokerName"}


def now_ms():
    return int(time.time() * 1000)


def parse_properties(text):
    """PROTOCOL.md §6.4: key \\x01 value \\x02 ..."""
    props = {}
    if not text:
        return props
    for piece in text.split("\x02"):
        if len(piece) < 3 or "\x01" not in piece:
            continue
        k, v = piece.split("\x01", 1)
        if k and v:
            props[k] = v
    return props


def encode_properties(props):
    return "".join("%s\x01%s\x02" % (k, v) for k, v in props.items())


def body_view(body):
    """Body as text when it is printable UTF-8, always also as hex."""
    view = {"body_len": len(body), "body_hex": body.hex()}
    try:
        text = body.decode("utf-8")
        view["body_text"] = text
    except UnicodeDecodeError:
        pass
    return view


def decode_batch(body):
    """PROTOCOL.md §6.7 batch body; returns a list of items or an error string."""
    items = []
    pos = 0
    try:
        while pos < len(body):
            total, magic, crc, flag, body_len = struct.unpack_from(">iiiii", body, pos)
            p = pos + 20
            item_body = body[p:p + body_len]
            p += body_len
            (props_len,) = struct.unpack_from(">h", body, p)
            p += 2
            props_raw = body[p:p + props_len]
            p += props_len
            items.append({
                "total_size": total, "magic": magic, "body_crc": crc, "flag": flag,
                "body_len": body_len, "body_text": item_body.decode("utf-8", "replace"),
                "properties_raw": props_raw.decode("utf-8", "replace"),
                "properties": parse_properties(props_raw.decode("utf-8", "replace")),
                "consumed_bytes": p - pos,
            })
            if total != p - pos:
                items[-1]["total_size_mismatch"] = True
            pos = p
    except struct.error as exc:
        return {"error": "truncated batch at byte %d: %s" % (pos, exc), "items": items}
    return {"items": items}


def is_batch(code, ext):
    """SEND_BATCH_MESSAGE, or a SEND_MESSAGE whose batch field is true (the C++ client sends its
    batches as code 10 with "batch":"1")."""
    flag = str(ext.get("batch", ext.get("m", ""))).lower()
    return code == 320 or (code in (10, 310) and flag in ("1", "true"))


def batch_body(ext, body):
    """The C++ client zlib-compresses a whole batch body over 4 KiB and sets sysFlag bit 0."""
    sys_flag = int(ext.get("sysFlag", ext.get("f", 0)) or 0)
    if sys_flag & 1:
        try:
            return zlib.decompress(body)
        except zlib.error:
            return body
    return body


def decode_binary_header(data):
    """PROTOCOL.md §1.4 ROCKETMQ binary header."""
    code, lang, version, opaque, flag, remark_len = struct.unpack_from(">hbhiii", data, 0)
    p = 17
    remark = data[p:p + remark_len].decode("utf-8", "replace") if remark_len else None
    p += remark_len
    (ext_len,) = struct.unpack_from(">i", data, p)
    p += 4
    end = p + ext_len
    ext = {}
    while p < end:
        (kl,) = struct.unpack_from(">h", data, p)
        p += 2
        k = data[p:p + kl].decode()
        p += kl
        (vl,) = struct.unpack_from(">i", data, p)
        p += 4
        ext[k] = data[p:p + vl].decode()
        p += vl
    return {"code": code, "language": lang, "version": version, "opaque": opaque,
            "flag": flag, "remark": remark, "extFields": ext}


def encode_binary_header(h):
    remark = (h.get("remark") or "").encode()
    ext = b""
    for k, v in (h.get("extFields") or {}).items():
        kb, vb = str(k).encode(), str(v).encode()
        ext += struct.pack(">h", len(kb)) + kb + struct.pack(">i", len(vb)) + vb
    return (struct.pack(">hbhiii", h["code"], 0, h["version"], h["opaque"], h["flag"],
                        len(remark)) + remark + struct.pack(">i", len(ext)) + ext)


class Store:
    """In-memory queues for --store: (topic, queueId) -> list of stored records."""

    def __init__(self, host, port):
        self.cond = threading.Condition()
        self.queues = {}
        self.commit_log_offset = 0
        self.offsets = {}  # (group, topic, queueId) -> committed offset
        self.by_commit_log_offset = {}  # commitLogOffset -> fields, for CONSUMER_SEND_MSG_BACK
        self.store_host = socket.inet_aton(host) + struct.pack(">i", port)

    def msg_id(self, commit_log_offset):
        return (self.store_host + struct.pack(">q", commit_log_offset)).hex().upper()

    def append(self, topic, queue_id, body, flag, sys_flag, born_ts, born_host, props,
               reconsume_times=0):
        """Store one message, return (offsetMsgId, queueOffset)."""
        with self.cond:
            q = self.queues.setdefault((topic, queue_id), [])
            queue_offset = len(q)
            phys = self.commit_log_offset
            topic_b = topic.encode()
            props_b = encode_properties(props).encode()
            # Field by field, in the order of PROTOCOL.md §6.1 (TOTALSIZE is prepended below).
            rec = b"".join([
                struct.pack(">i", MAGIC_V1 - (1 << 32)),
                struct.pack(">i", zlib.crc32(body) & 0x7FFFFFFF),
                struct.pack(">i", queue_id),
                struct.pack(">i", flag),
                struct.pack(">q", queue_offset),
                struct.pack(">q", phys),
                struct.pack(">i", sys_flag),
                struct.pack(">q", born_ts),
                born_host,
                struct.pack(">q", now_ms()),
                self.store_host,
                struct.pack(">i", reconsume_times),
                struct.pack(">q", 0),
                struct.pack(">i", len(body)), body,
                struct.pack(">b", len(topic_b)), topic_b,
                struct.pack(">h", len(props_b)), props_b,
            ])
            rec = struct.pack(">i", len(rec) + 4) + rec
            q.append(rec)
            self.by_commit_log_offset[phys] = {
                "topic": topic, "body": body, "flag": flag, "sys_flag": sys_flag,
                "born_ts": born_ts, "born_host": born_host, "props": dict(props),
                "reconsume_times": reconsume_times, "msg_id": self.msg_id(phys)}
            self.commit_log_offset += len(rec)
            self.cond.notify_all()
            return self.msg_id(phys), queue_offset

    def max_offset(self, topic, queue_id):
        with self.cond:
            return len(self.queues.get((topic, queue_id), []))

    def read(self, topic, queue_id, offset, max_nums):
        with self.cond:
            q = self.queues.get((topic, queue_id), [])
            return q[offset:offset + max_nums], len(q)


class Server:
    def __init__(self, args):
        self.args = args
        self.quirks = set(args.quirk or [])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", args.port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.start = time.time()
        self.out_lock = threading.Lock()
        self.out = open(args.log, "a", buffering=1) if args.log else sys.stdout
        self.conn_seq = 0
        self.opaque_seq = 0
        self.clients = {}  # group -> {clientID}
        self.locks = {}  # (group, topic, brokerName, queueId) -> clientId
        self.conn_clients = {}  # conn id -> {(group, clientID)} registered by its heartbeats
        self.group_channels = {}  # group -> {conn id: (socket, write lock)}
        self.state_lock = threading.Lock()
        self.store = Store("127.0.0.1", self.port)
        self.queue_offsets = {}  # (topic, queueId) -> next offset, when not --store

    # ---- logging -------------------------------------------------------------------------
    def log(self, record):
        record["t_ms"] = int((time.time() - self.start) * 1000)
        line = json.dumps(record, ensure_ascii=False, sort_keys=False)
        with self.out_lock:
            self.out.write(line + "\n")
            self.out.flush()

    # ---- framing ---------------------------------------------------------------------------
    def serve(self):
        print("READY " + json.dumps({"addr": self.addr, "port": self.port}), flush=True)
        while True:
            conn, peer = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.state_lock:
                self.conn_seq += 1
                cid = self.conn_seq
            self.log({"event": "connect", "conn": cid, "peer": "%s:%d" % peer})
            threading.Thread(target=self.handle_conn, args=(conn, cid, peer), daemon=True).start()

    def recv_exact(self, conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def handle_conn(self, conn, cid, peer):
        wlock = threading.Lock()
        try:
            while True:
                head = self.recv_exact(conn, 8)
                if head is None:
                    break
                total, sth = struct.unpack(">ii", head)
                stype = (sth >> 24) & 0xFF
                hlen = sth & 0xFFFFFF
                rest = self.recv_exact(conn, total - 4)
                if rest is None:
                    break
                header_bytes = rest[:hlen]
                body = rest[hlen:]
                rec = {"event": "frame", "dir": "in", "conn": cid, "peer": "%s:%d" % peer,
                       "frame_len": total, "serialize_type": stype, "header_len": hlen}
                if self.args.raw:
                    rec["frame_hex"] = (head + rest).hex()
                if stype == 0:
                    text = header_bytes.decode("utf-8", "replace")
                    rec["header_raw"] = text
                    try:
                        dec = json.JSONDecoder()
                        header, end = dec.raw_decode(text)
                        rec["header_trailing"] = text[end:]
                    except ValueError as exc:
                        rec["header_error"] = str(exc)
                        self.log(rec)
                        continue
                else:
                    header = decode_binary_header(header_bytes)
                    rec["header_raw_hex"] = header_bytes.hex()
                code = header.get("code")
                rec["name"] = NAMES.get(code, "?")
                rec["header"] = header
                rec.update(body_view(body))
                self.decorate(rec, header, body)
                self.log(rec)
                if header.get("flag", 0) & 1:
                    continue  # a response to one of our requests
                try:
                    self.dispatch(conn, wlock, cid, header, body, stype, peer)
                except Exception as exc:  # keep serving; the log shows what broke
                    self.log({"event": "handler_error", "conn": cid, "code": code,
                              "error": repr(exc)})
        except OSError as exc:
            self.log({"event": "conn_error", "conn": cid, "error": repr(exc)})
        finally:
            self.log({"event": "disconnect", "conn": cid})
            changed = set()
            with self.state_lock:
                for group, client_id in self.conn_clients.pop(cid, set()):
                    self.clients.get(group, set()).discard(client_id)
                    self.group_channels.get(group, {}).pop(cid, None)
                    changed.add(group)
            for group in changed:
                self.notify_group(group)
            try:
                conn.close()
            except OSError:
                pass

    def decorate(self, rec, header, body):
        ext = header.get("extFields") or {}
        code = header.get("code")
        if code in (10, 310, 320):
            props = ext.get("properties", ext.get("i"))
            if isinstance(props, str):
                rec["properties"] = parse_properties(props)
            if is_batch(code, ext):
                rec["batch"] = decode_batch(batch_body(ext, body))
        if code in (34, 38, 41, 42) and body:
            try:
                rec["body_json"] = json.loads(body.decode("utf-8"))
            except ValueError as exc:
                rec["body_json_error"] = str(exc)
        if ext:
            rec["ext_value_types"] = {k: type(v).__name__ for k, v in ext.items()}

    def send_frame(self, conn, wlock, cid, header, body, stype):
        if stype == 1 or "binary-responses" in self.quirks:
            hb = encode_binary_header(header)
            stype_out = 1
        else:
            hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
            stype_out = 0
        frame = struct.pack(">ii", 4 + len(hb) + len(body), (stype_out << 24) | len(hb)) + hb + body
        with wlock:
            conn.sendall(frame)
        if self.args.log_responses:
            rec = {"event": "frame", "dir": "out", "conn": cid, "header": header,
                   "serialize_type": stype_out}
            rec.update(body_view(body) if len(body) < 4096 else {"body_len": len(body)})
            self.log(rec)

    def notify_group(self, group):
        """NOTIFY_CONSUMER_IDS_CHANGED (40), oneway, to every connection of the group, as a Java
        broker does when the group's membership changes (unless --no-notify)."""
        if self.args.no_notify:
            return
        with self.state_lock:
            channels = list(self.group_channels.get(group, {}).items())
            self.opaque_seq += 1
            opaque = self.opaque_seq
        header = {"code": 40, "extFields": {"consumerGroup": group}, "flag": 2,
                  "language": "JAVA", "opaque": opaque, "serializeTypeCurrentRPC": "JSON",
                  "version": 479}
        for cid, (conn, wlock) in channels:
            try:
                self.send_frame(conn, wlock, cid, header, b"", 0)
            except OSError:
                pass

    def respond(self, conn, wlock, cid, req, stype, code, ext=None, body=b"", remark=None):
        ext = {k: str(v) for k, v in (ext or {}).items()}
        if "numeric-ext" in self.quirks:
            ext = {k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in ext.items()}
        header = {"code": code}
        if req.get("code") in (10, 310, 320) and "send-no-ext" in self.quirks:
            ext = {}
        if req.get("code") in (11, 361) and "pull-no-ext" in self.quirks:
            ext = {}
        if ext or "no-ext-fields" not in self.quirks:
            header["extFields"] = ext
        header["flag"] = 1
        header["language"] = "JAVA"
        header["opaque"] = req.get("opaque", 0)
        if remark is not None and "no-remark" not in self.quirks:
            header["remark"] = remark
        if "no-serialize-type" not in self.quirks:
            header["serializeTypeCurrentRPC"] = "ROCKETMQ" if stype == 1 else "JSON"
        header["version"] = 0 if "version-0" in self.quirks else 479
        self.send_frame(conn, wlock, cid, header, body, stype)

    # ---- request handling ------------------------------------------------------------------
    def route_body(self, topic):
        queues = 1 if topic.startswith("%RETRY%") else self.args.queues
        if "legacy-route" in self.quirks:
            return ('{"brokerDatas":[{"brokerAddrs":{0:"%s"},"brokerName":"broker-a",'
                    '"cluster":"DefaultCluster","enableActingMaster":false}],'
                    '"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,'
                    '"readQueueNums":%d,"topicSysFlag":0,"writeQueueNums":%d}]}'
                    % (self.addr, queues, queues)).encode()
        route = {
            "brokerDatas": [{"brokerAddrs": {"0": self.addr}, "brokerName": "broker-a",
                             "cluster": "DefaultCluster", "enableActingMaster": False}],
            "filterServerTable": {},
            "queueDatas": [{"brokerName": "broker-a", "perm": 6, "readQueueNums": queues,
                            "topicSysFlag": 0, "writeQueueNums": queues}],
        }
        return json.dumps(route, separators=(",", ":")).encode()

    def dispatch(self, conn, wlock, cid, h, body, stype, peer):
        code = h.get("code")
        ext = h.get("extFields") or {}
        oneway = bool(h.get("flag", 0) & 2)

        def reply(rcode, rext=None, rbody=b"", remark=None):
            if oneway:
                return
            self.respond(conn, wlock, cid, h, stype, rcode, rext, rbody, remark)

        if code in (self.args.unsupported or []):
            return reply(3, remark=" request type %s not supported" % code)
        if code == 105:
            topic = str(ext.get("topic", ""))
            if self.args.route_code is not None and topic != "TBW102":
                return reply(self.args.route_code, remark="route lookup refused by --route-code")
            return reply(0, rbody=self.route_body(topic))
        if code == 34:
            changed = []
            try:
                hb = json.loads(body.decode("utf-8"))
                client_id = hb.get("clientID")
                with self.state_lock:
                    for c in hb.get("consumerDataSet") or []:
                        group = c.get("groupName")
                        members = self.clients.setdefault(group, set())
                        if client_id not in members:
                            members.add(client_id)
                            changed.append(group)
                        self.conn_clients.setdefault(cid, set()).add((group, client_id))
                        self.group_channels.setdefault(group, {})[cid] = (conn, wlock)
            except ValueError:
                pass
            reply(0)
            for group in changed:
                self.notify_group(group)
            return None
        if code == 35:
            group = ext.get("consumerGroup")
            removed = False
            with self.state_lock:
                if group and ext.get("clientID") in self.clients.get(group, set()):
                    self.clients[group].discard(ext.get("clientID"))
                    removed = True
                self.conn_clients.get(cid, set()).discard((group, ext.get("clientID")))
                self.group_channels.get(group, {}).pop(cid, None)
            reply(0)
            if removed:
                self.notify_group(group)
            return None
        if code in (10, 310, 320):
            return self.handle_send(reply, code, ext, body, peer)
        if code == 14:
            key = (ext.get("consumerGroup"), ext.get("topic"), int(ext.get("queueId", 0)))
            with self.store.cond:
                off = self.store.offsets.get(key)
            if off is None and self.args.store and self.store.max_offset(key[1], key[2]) > 0:
                # Java broker: a new group on a queue that still holds offset 0 starts at 0.
                off = 0
            if off is None:
                return reply(22, remark="Not found, maybe this group consumer boot first")
            return reply(0, {"offset": off})
        if code == 15:
            key = (ext.get("consumerGroup"), ext.get("topic"), int(ext.get("queueId", 0)))
            with self.store.cond:
                self.store.offsets[key] = int(ext.get("commitOffset", 0))
            return reply(0)
        if code == 30:
            return reply(0, {"offset": self.max_offset(ext)})
        if code in (31, 29):
            return reply(0, {"offset": 0})
        if code in (11, 361):
            return self.handle_pull(reply, ext)
        if code == 38:
            with self.state_lock:
                ids = sorted(self.clients.get(ext.get("consumerGroup"), set()))
            if not ids:
                return reply(1, remark="no consumer for this group, %s" % ext.get("consumerGroup"))
            return reply(0, rbody=json.dumps({"consumerIdList": ids}).encode())
        if code == 36 and self.args.store:
            return self.handle_send_back(reply, ext)
        if code == 41:
            req = json.loads(body.decode("utf-8"))
            ok = []
            with self.state_lock:
                for mq in req.get("mqSet", []):
                    key = (req.get("consumerGroup"), mq.get("topic"), mq.get("brokerName"),
                           mq.get("queueId"))
                    holder = self.locks.get(key)
                    if holder in (None, req.get("clientId")):
                        self.locks[key] = req.get("clientId")
                        ok.append(mq)
            return reply(0, rbody=json.dumps({"lockOKMQSet": ok}).encode())
        if code == 42:
            req = json.loads(body.decode("utf-8"))
            with self.state_lock:
                for mq in req.get("mqSet", []):
                    key = (req.get("consumerGroup"), mq.get("topic"), mq.get("brokerName"),
                           mq.get("queueId"))
                    if self.locks.get(key) == req.get("clientId"):
                        del self.locks[key]
            return reply(0)
        return reply(3, remark=" request type %s not supported" % code)

    def handle_send_back(self, reply, ext):
        """CONSUMER_SEND_MSG_BACK: copy the message to %RETRY%<group> queue 0, delivered at once
        (a real broker delays it by level 3 + reconsumeTimes via SCHEDULE_TOPIC_XXXX)."""
        with self.store.cond:
            orig = self.store.by_commit_log_offset.get(int(ext.get("offset", -1)))
        if orig is None:
            return reply(1, remark="look message by offset failed, %s" % ext.get("offset"))
        props = dict(orig["props"])
        props.setdefault("RETRY_TOPIC", orig["topic"])
        props.setdefault("ORIGIN_MESSAGE_ID", orig["msg_id"])
        self.store.append("%%RETRY%%%s" % ext.get("group"), 0, orig["body"], orig["flag"],
                          orig["sys_flag"], orig["born_ts"], orig["born_host"], props,
                          reconsume_times=orig["reconsume_times"] + 1)
        return reply(0)

    def max_offset(self, ext):
        topic, qid = ext.get("topic"), int(ext.get("queueId", 0))
        if self.args.store:
            return self.store.max_offset(topic, qid)
        return 0

    def handle_send(self, reply, code, ext, body, peer):
        if "send-no-reply" in self.quirks:
            return None
        if self.args.send_code is not None:
            return reply(self.args.send_code, remark="send refused by --send-code")
        get = lambda long, short: ext.get(long, ext.get(short))  # noqa: E731
        topic = str(get("topic", "b"))
        queue_id = int(get("queueId", "e"))
        sys_flag = int(get("sysFlag", "f") or 0)
        flag = int(get("flag", "h") or 0)
        born_ts = int(get("bornTimestamp", "g") or 0)
        props = parse_properties(get("properties", "i") or "")
        born_host = socket.inet_aton(peer[0]) + struct.pack(">i", peer[1])
        if queue_id < 0:
            queue_id = 0
        items = []
        if is_batch(code, ext):
            items = [(i["body_text"].encode(), i["flag"], i["properties"])
                     for i in decode_batch(batch_body(ext, body)).get("items", [])]
            sys_flag &= ~1  # items are stored uncompressed
        else:
            items = [(body, flag, props)]
        ids, first_offset = [], None
        for item_body, item_flag, item_props in items:
            if self.args.store:
                mid, qoff = self.store.append(topic, queue_id, item_body, item_flag, sys_flag,
                                              born_ts, born_host, item_props)
            else:
                with self.state_lock:
                    qoff = self.queue_offsets.get((topic, queue_id), 0)
                    self.queue_offsets[(topic, queue_id)] = qoff + 1
                    phys = self.store.commit_log_offset
                    self.store.commit_log_offset += 100 + len(item_body)
                mid = self.store.msg_id(phys)
            ids.append(mid)
            if first_offset is None:
                first_offset = qoff
        rext = {"queueId": queue_id, "queueOffset": first_offset or 0,
                "MSG_REGION": "DefaultRegion", "TRACE_ON": "true"}
        if "send-msgid-missing" not in self.quirks:
            rext["msgId"] = ",".join(ids)
        uniq = props.get("UNIQ_KEY")
        if uniq:
            rext["transactionId"] = uniq
        return reply(0, rext)

    def handle_pull(self, reply, ext):
        topic = str(ext.get("topic"))
        qid = int(ext.get("queueId", 0))
        offset = int(ext.get("queueOffset", 0))
        max_nums = int(ext.get("maxMsgNums", 32))
        sys_flag = int(ext.get("sysFlag", 0))
        suspend_ms = int(ext.get("suspendTimeoutMillis", 0) or 0)
        group = ext.get("consumerGroup")
        if sys_flag & 1 and self.args.store:
            with self.store.cond:
                self.store.offsets[(group, topic, qid)] = int(ext.get("commitOffset", 0))

        def answer():
            recs, max_off = self.store.read(topic, qid, offset, max_nums)
            hdr = {"suggestWhichBrokerId": 0, "minOffset": 0, "maxOffset": max_off}
            if "pull-missing-max" in self.quirks:
                del hdr["maxOffset"]
            if recs:
                hdr["nextBeginOffset"] = offset + len(recs)
                reply(0, hdr, b"".join(recs), remark="FOUND")
            elif offset > max_off:
                hdr["nextBeginOffset"] = max_off
                reply(21, hdr, remark="OFFSET_OVERFLOW_BADLY")
            else:
                hdr["nextBeginOffset"] = offset
                reply(19, hdr, remark="OFFSET_FOUND_NULL")

        hold_ms = min(suspend_ms, self.args.pull_hold_ms) if sys_flag & 2 else 0
        if hold_ms <= 0 or self.store.max_offset(topic, qid) > offset:
            return answer()

        def held():
            deadline = time.time() + hold_ms / 1000.0
            with self.store.cond:
                while time.time() < deadline:
                    if len(self.store.queues.get((topic, qid), [])) > offset:
                        break
                    self.store.cond.wait(max(0.0, deadline - time.time()))
            try:
                answer()
            except OSError:
                pass

        threading.Thread(target=held, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="listen port on 127.0.0.1 (0 = free)")
    ap.add_argument("--log", help="append frame lines to this file instead of stdout")
    ap.add_argument("--log-responses", action="store_true", help="also log frames we send")
    ap.add_argument("--raw", action="store_true",
                    help="add frame_hex (the whole received frame, length prefix included)")
    ap.add_argument("--store", action="store_true", help="keep sent messages, serve pulls")
    ap.add_argument("--queues", type=int, default=4, help="read/write queues per topic")
    ap.add_argument("--pull-hold-ms", type=int, default=1000,
                    help="max time to hold a suspended pull with nothing to return")
    ap.add_argument("--send-code", type=int, help="answer every SEND with this code")
    ap.add_argument("--route-code", type=int, help="answer route lookups (except TBW102) with this")
    ap.add_argument("--no-notify", action="store_true",
                    help="do not send NOTIFY_CONSUMER_IDS_CHANGED when a group's members change")
    ap.add_argument("--unsupported", type=int, action="append", metavar="CODE",
                    help="answer this request code with 3 REQUEST_CODE_NOT_SUPPORTED (repeatable)")
    ap.add_argument("--quirk", action="append", help="see module docstring")
    args = ap.parse_args()
    Server(args).serve()


if __name__ == "__main__":
    main()
