#!/usr/bin/env python3
"""One scenario of the python etcd3gw client (the OpenStack client that
speaks only the JSON gateway) against one server: etcd or ferrokv.

    python3 tests/python/etcd3gw_scenario.py HOST PORT

Prints one line per step, `name: result`, results as compact JSON with
sorted keys (as the gateway writes it, so the test's normalizer reads
both alike) and bytes shown as python literals. tests/tests/etcd3gw.rs runs it
against etcd 3.4.23 and ferrokv and compares the outputs after removing
what legitimately differs (the header's ids and term, addresses, status
sizes and indexes). What differs by timing is made deterministic here:
lease ids become <lease-N> in the order they are granted (the server
picks them), a remaining TTL is shown as its distance from the granted
one only when that is outside the second or two a step can take, and
lock values (etcd3gw writes a random uuid) are never printed.

The server must be fresh: revisions are printed and compared as they
are.
"""

import json
import sys
import threading
import time

import etcd3gw
from etcd3gw import exceptions

# Bound on one HTTP request of the client, and on waiting for one watch
# event that is expected to come.
TIMEOUT_S = 10
# How long a watch that must see nothing waits before it is called empty.
QUIET_WATCH_S = 0.5
# How much a remaining TTL may lag behind the granted one when read right
# after a grant or refresh (etcd truncates to whole seconds, and a step
# on a loaded machine takes time).
TTL_SLACK_S = 3

leases = {}


def lease_name(lease_id):
    return leases.setdefault(int(lease_id), "<lease-%d>" % (len(leases) + 1))


def show(value):
    """value as JSON-able data: bytes as literals, lease ids by name."""
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("lease", "ID") and str(v).isdigit() and int(v) in leases:
                out[k] = leases[int(v)]
            else:
                out[k] = show(v)
        return out
    if isinstance(value, (list, tuple)):
        return [show(v) for v in value]
    return value


def step(name, fn):
    """Runs fn and prints its result, or the exception it raised (the
    class etcd3gw chose from the HTTP status, and the body)."""
    try:
        result = show(fn())
    except exceptions.Etcd3Exception as e:
        result = {"raised": type(e).__name__, "detail": e.detail_text}
    print("%s: %s" % (name, json.dumps(result, sort_keys=True, separators=(",", ":"))), flush=True)


def ttl_near(granted_s, remaining_s):
    lag = granted_s - remaining_s
    return "granted" if 0 <= lag <= TTL_SLACK_S else "granted-%d" % lag


def in_background(delay_s, fn):
    """Runs fn after delay_s on a thread (a write a watcher waits for)."""
    timer = threading.Timer(delay_s, fn)
    timer.start()
    return timer


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    # api_path=None: found from /version, as etcd3gw does by default
    # (and not from a developer's ETCD3GW_API_PATH).
    c = etcd3gw.client(host=host, port=port, timeout=TIMEOUT_S, api_path=None)

    # --- status and members (ids, sizes and indexes normalized by the test)
    step("status", c.status)
    step("members", c.members)

    # --- put, get, delete
    step("put foo", lambda: c.put("foo", "bar"))
    step("get foo", lambda: c.get("foo"))
    step("get foo metadata", lambda: c.get("foo", metadata=True))
    step("put foo again", lambda: c.put(b"foo", b"bar2"))
    step("get foo revision 2", lambda: c.get("foo", metadata=True, revision=2))
    step("get missing", lambda: c.get("missing"))
    step("put binary", lambda: c.put(b"\x00\xff\x01", b"\xfe\x00"))
    step("get binary", lambda: c.get(b"\x00\xff\x01", metadata=True))
    step("get future revision", lambda: c.get("foo", revision=1000))
    for k in ("/dir/b", "/dir/a", "/dir/c", "/dir0"):
        step("put " + k, lambda k=k: c.put(k, "v" + k))
    step("get_prefix", lambda: c.get_prefix("/dir/"))
    step(
        "get_prefix descend",
        lambda: c.get_prefix("/dir/", sort_order="descend", sort_target="key"),
    )
    step(
        "get_prefix by mod descend",
        lambda: c.get_prefix("/dir/", sort_order="descend", sort_target="mod"),
    )
    step("get_all", c.get_all)
    step("get_all descend", lambda: c.get_all(sort_order="descend"))
    step("get range limit", lambda: c.get("/dir/", metadata=True, range_end="/dir0", limit=2))
    step("get keys_only", lambda: c.get("/dir/a", metadata=True, keys_only=True))
    step("get count_only", lambda: c.get("/dir/", range_end="/dir0", count_only=True))
    step("get serializable", lambda: c.get("/dir/a", serializable=True))
    step(
        "get min_mod_revision",
        lambda: c.get("/dir/", metadata=True, range_end="/dir0", min_mod_revision=7),
    )
    step("delete foo", lambda: c.delete("foo"))
    step("delete foo again", lambda: c.delete("foo"))
    step("delete prev_kv", lambda: c.delete("/dir0", prev_kv=True))
    step("delete_prefix", lambda: c.delete_prefix("/dir/"))
    step("get_prefix after delete", lambda: c.get_prefix("/dir/"))

    # --- create and replace: transactions on create revision and value
    step("create new", lambda: c.create("new", "v1"))
    step("create new again", lambda: c.create("new", "v2"))
    step("replace v1 by v3", lambda: c.replace("new", "v1", "v3"))
    step("replace v1 by v4", lambda: c.replace("new", "v1", "v4"))
    step("get new", lambda: c.get("new"))
    step(
        "transaction",
        lambda: c.transaction(
            {
                "compare": [
                    {"key": "bmV3", "result": "EQUAL", "target": "VERSION", "version": 9}
                ],
                "success": [{"request_put": {"key": "bmV3", "value": "eA=="}}],
                "failure": [
                    {"request_range": {"key": "bmV3"}},
                    {"request_put": {"key": "dHhu", "value": "eQ==", "prev_kv": True}},
                    {"request_delete_range": {"key": "bmV3", "prev_kv": True}},
                ],
            }
        ),
    )
    step(
        "transaction refused",
        lambda: c.transaction(
            {"success": [{"request_put": {"key": "dHhu"}}, {"request_put": {"key": "dHhu"}}]}
        ),
    )

    # --- leases and keys with a lease
    lease = c.lease(ttl=60)
    step("lease", lambda: lease_name(lease.id))
    step("lease ttl", lambda: ttl_near(60, lease.ttl()))
    step("put with lease", lambda: c.put("leased", "x", lease=lease))
    step("create with lease", lambda: c.create("leased2", "y", lease=lease))
    step("get with lease", lambda: c.get("leased", metadata=True))
    # etcd lists a lease's keys in Go map order (random): sorted here.
    step("lease keys", lambda: sorted(lease.keys()))
    step("lease refresh", lambda: ttl_near(60, lease.refresh()))
    def timetolive():
        got = c.post(c.get_url("/lease/timetolive"), json={"ID": lease.id, "keys": True})
        got["TTL"] = ttl_near(int(got["grantedTTL"]), int(got["TTL"]))
        got["keys"].sort()
        return got

    step("lease timetolive", timetolive)
    step("leases", lambda: c.post(c.get_url("/lease/leases"), json={}))
    step("lease revoke", lease.revoke)
    step("get after revoke", lambda: c.get_prefix("leased"))
    step("lease ttl after revoke", lease.ttl)
    step("lease keys after revoke", lease.keys)
    step("lease refresh after revoke", lease.refresh)
    step("lease revoke again", lease.revoke)
    step("put with revoked lease", lambda: c.put("leased", "x", lease=lease))
    short = c.lease(ttl=1)
    step("short lease", lambda: lease_name(short.id))
    # etcd raises a TTL below its minimum (1.5 election timeouts) to it.
    step(
        "short lease granted TTL",
        lambda: c.post(c.get_url("/lease/timetolive"), json={"ID": short.id})["grantedTTL"],
    )
    step("put with short lease", lambda: c.put("short", "x", lease=short))
    # etcd expires a lease within a second or so after its TTL.
    deadline = time.monotonic() + TIMEOUT_S
    while c.get("short") and time.monotonic() < deadline:
        time.sleep(0.2)
    step("short lease expired", lambda: (c.get("short"), short.ttl()))

    # --- watch: watch_once, and an iterator with cancel
    rev = int(c.status()["header"]["revision"])
    step("put w", lambda: c.put("w", "1"))
    step("watch_once from revision", lambda: c.watch_once("w", TIMEOUT_S, start_revision=rev + 1))
    # The put comes while watch_once waits; the start revision makes the
    # event seen even if the put is faster than the watch's creation.
    live_from = int(c.status()["header"]["revision"]) + 1
    in_background(0.3, lambda: c.put("w", "2"))
    step(
        "watch_once live",
        lambda: c.watch_once("w", TIMEOUT_S, start_revision=live_from, prev_kv=True),
    )
    step("watch_once nothing", lambda: c.watch_once("nothing", QUIET_WATCH_S))
    events, cancel = c.watch("w", prev_kv=True)
    c.put("w", "3")
    c.delete("w")
    c.put("w", "4")
    step("watch iterator", lambda: [next(events) for _ in range(3)])
    cancel()
    step("watch iterator after cancel", lambda: list(events))
    events, cancel = c.watch_prefix("wp/", filters=["NODELETE"])
    c.put("wp/a", "1")
    c.delete("wp/a")
    c.put("wp/b", "2")
    step("watch_prefix NODELETE", lambda: [next(events) for _ in range(2)])
    cancel()
    step("compaction", lambda: c.post(c.get_url("/kv/compaction"), json={"revision": rev}))
    step("watch_once compacted", lambda: c.watch_once("w", QUIET_WATCH_S, start_revision=2))
    step("get compacted", lambda: c.get("w", revision=2))

    # --- lock: a lease and a txn on the lock key's create revision
    lock = c.lock("mylock", ttl=60)
    other = c.lock("mylock", ttl=60)
    step("lock acquire", lock.acquire)
    step("lock is_acquired", lock.is_acquired)
    lease_name(lock.lease.id)
    step("lock key", lambda: [m for _, m in c.get("/locks/mylock", metadata=True)])
    step("other acquire", other.acquire)
    lease_name(other.lease.id)
    step("other is_acquired", other.is_acquired)
    step("lock refresh", lambda: ttl_near(60, lock.refresh()))
    step("lock release", lock.release)
    step("lock release again", lock.release)
    step("other acquire after release", other.acquire)
    step("other release", other.release)
    with c.lock("ctx", ttl=60) as held:
        step("context lock is_acquired", held.is_acquired)
    step("context lock released", lambda: c.get("/locks/ctx"))

    step("status at the end", c.status)


if __name__ == "__main__":
    main()
