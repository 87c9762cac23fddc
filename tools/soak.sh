#!/bin/bash
# Soak test of `qkf serve` (issue #17; not part of CI): one server, CLIENTS connections for SECONDS
# seconds, mixed as a live deployment might see them:
#   - well-behaved clients (3/4 of them) stream real event windows in real time: the DVS
#     emulator's events of Fashion-MNIST test images (qkf events emulate), one recording replayed
#     back to back, time-shifted, for about 10 s per session; END; every answer is checked
#     (window, sample and step in order, one per window, none lost); then a new session;
#   - slow clients (1/8) do the same but take their answers in bursts (40, then a pause of 0.5 s:
#     80 a second for 100 windows a second), so the server's backpressure holds them back; their
#     answers are checked too;
#   - clients that disconnect mid-frame (1/16): HELLO, a few hundred events, half a frame, hang up;
#   - clients that send garbage (1/16): random bytes, or a valid HELLO then random bytes.
# Every 30 s one line: answers/s of the well-behaved clients, their answer latency (p50, p99: from
# sending the frame that closed a window to its answer), the server's RSS, sessions, errors.
# At the end: no answer lost by a well-behaved or slow client; the server's RSS flat (within 5%)
# over the last third of the run, and no higher once every session has closed than at its
# largest under load (freed memory may stay with the allocator, but nothing may keep growing);
# SIGTERM gives exit 0 and the summary line. Exit status 0 when all of that holds. The "open"
# column counts established connections to the server (its sessions, closing ones included).
#
# usage: tools/soak.sh [SECONDS (600)] [CLIENTS (64)]
#   env: QKF (build/qkf), WEIGHTS (tests/fixtures/dvs128_small.weights.h5), OUT (/tmp/qkf-soak),
#        NICE (10: the server and the clients run under nice), THREADS (server --threads, 2)
# Needs python3 with numpy (Debian python3-numpy) and the Fashion-MNIST test set where
# qkf events emulate finds it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-600}
CLIENTS=${2:-64}
QKF=${QKF:-build/qkf}
WEIGHTS=${WEIGHTS:-tests/fixtures/dvs128_small.weights.h5}
OUT=${OUT:-/tmp/qkf-soak}
NICE=${NICE:-10}
THREADS=${THREADS:-2}
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

mkdir -p "$OUT"
for i in 0 1 2 3 4 5 6 7; do
    [ -s "$OUT/ev$i.npy" ] || "$QKF" events emulate --data fashion-mnist --test --index "$i" \
        --sensor 32 --out "$OUT/ev$i.npy" >/dev/null
done

nice -n "$NICE" "$QKF" serve --weights "$WEIGHTS" --listen 127.0.0.1:0 --threads "$THREADS" \
    --max-sessions 256 --idle-timeout 20 >"$OUT/serve.out" 2>"$OUT/serve.err" &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q '^listening on' "$OUT/serve.out" 2>/dev/null && break
    sleep 0.1
done
PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$OUT/serve.out")
[ -n "$PORT" ] || { echo "soak: the server did not start:" >&2; cat "$OUT/serve.err" >&2; exit 1; }
echo "soak: $(sed -n 2p "$OUT/serve.out")"
echo "soak: server pid $SPID on port $PORT; $CLIENTS clients for $SECONDS_RUN s ($(nproc) cores," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start)"

set +e
nice -n "$NICE" "$PY" - "$PORT" "$SPID" "$SECONDS_RUN" "$CLIENTS" "$OUT"/ev?.npy <<'PY'
import asyncio, os, random, struct, sys, time
import numpy as np

port, spid, seconds, nclients = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
recs = [np.load(f) for f in sys.argv[5:]]
SESSION_S = 10.0                      # one well-behaved session: about this long
T0 = time.monotonic()
END_AT = T0 + seconds

stats = {"answers": 0, "lat": [], "lost": 0, "sessions": 0, "bad": 0, "slow_answers": 0,
         "rude": 0, "garbage": 0, "busy": 0}
problems = []

def rss_kb():
    try:
        with open(f"/proc/{spid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1

def connections():
    """Established TCP connections to the server's port (its open sessions)."""
    n = 0
    for tab in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(tab) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n

def frame(t, payload=b""):
    return struct.pack("<IB", len(payload) + 1, t) + payload

def hello(w, h):
    return frame(1, struct.pack("<HHII", 1, 0, w, h))

def events_payload(t, x, y, p):
    a = np.zeros(len(t), dtype=[("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
    a["t"], a["x"], a["y"], a["p"] = t, x, y, p
    return a.tobytes()

async def read_frame(r):
    hdr = await r.readexactly(5)
    n, t = struct.unpack("<IB", hdr)
    return t, await r.readexactly(n - 1)

async def behaved(cid, slow):
    """Sessions of one recording replayed in real time; every answer checked."""
    rng = random.Random(cid)
    while time.monotonic() < END_AT - 2:
        try:
            await session(cid, slow, rng)
        except OSError as e:
            stats["bad"] += 1
            problems.append(f"client {cid}: {e}")

async def session(cid, slow, rng):
    if True:
        ev = recs[rng.randrange(len(recs))]
        dur = int(ev["t"][-1] - ev["t"][0]) + 10000
        reps = max(1, int(SESSION_S * 1e6 / dur))
        t = np.concatenate([ev["t"] - ev["t"][0] + k * dur for k in range(reps)])
        x, y, p = (np.tile(ev[k], reps) for k in ("x", "y", "p"))
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError as e:
            problems.append(f"client {cid}: connect: {e}")
            await asyncio.sleep(1)
            return
        w.write(hello(32, 32))
        kind, body = await read_frame(r)
        if kind == 0x83:
            code = struct.unpack_from("<I", body)[0]
            if code == 8:
                stats["busy"] += 1
            problems.append(f"client {cid}: ERROR {code} {body[4:].decode(errors='replace')}")
            w.close()
            await asyncio.sleep(1)
            return
        K, L = struct.unpack_from("<II", body, 4)
        W = struct.unpack_from("<Q", body, 28)[0]
        S = struct.unpack_from("<I", body, 36)[0]
        nwin = int((t[-1] - t[0]) // W) + 1
        closed = {}           # window -> the time the frame that closed it was sent
        got = []

        async def reader():
            taken = 0
            while True:
                taken += 1
                if slow and taken % 40 == 0:  # 40 answers, then a pause of 0.5 s
                    await asyncio.sleep(0.5)
                try:
                    kind, body = await read_frame(r)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                now = time.monotonic()
                if kind == 0x82:
                    win, sample, step = struct.unpack_from("<QII", body)
                    got.append((win, sample, step))
                    if not slow and win in closed and now < END_AT:
                        stats["lat"].append(now - closed[win])
                        stats["answers"] += 1
                    elif slow:
                        stats["slow_answers"] += 1
                elif kind == 0x83:
                    problems.append(f"client {cid}: ERROR {body[4:].decode(errors='replace')}")
                    return

        rt = asyncio.create_task(reader())
        start = time.monotonic()
        i, n, last_win = 0, len(t), 0
        while i < n and time.monotonic() < END_AT:  # the run's end cuts a session short
            el = (time.monotonic() - start) * 1e6
            j = int(np.searchsorted(t, t[0] + el, side="right"))
            j = min(max(j, i + 1), n, i + 6000)
            w.write(frame(2, events_payload(t[i:j], x[i:j], y[i:j], p[i:j])))
            win_last = int((t[j - 1] - t[0]) // W)
            now = time.monotonic()
            for k in range(last_win, win_last):
                closed[k] = now
            last_win = max(last_win, win_last)
            i = j
            await w.drain()
            await asyncio.sleep(0.005)
        nwin = int((t[i - 1] - t[0]) // W) + 1 if i else 0  # the windows of what was sent
        w.write(frame(5))
        now = time.monotonic()
        for k in range(last_win, nwin):
            closed[k] = now
        await w.drain()
        try:
            await asyncio.wait_for(rt, timeout=600)
        except asyncio.TimeoutError:
            problems.append(f"client {cid}: answers did not finish within 600 s of END")
        w.close()
        stats["sessions"] += 1
        # every window answered once, in order, with its sample and step
        ok = len(got) == nwin and all(g[0] == k for k, g in enumerate(got))
        if ok and S:
            ok = all(g[1] == k // S and g[2] == k % S + 1 for k, g in enumerate(got))
        if not ok:
            stats["lost"] += max(0, nwin - len(got))
            stats["bad"] += 1
            problems.append(f"client {cid}: {len(got)} answers for {nwin} windows")

async def rude(cid):
    """Hangs up inside a frame, again and again."""
    rng = random.Random(1000 + cid)
    ev = recs[cid % len(recs)]
    while time.monotonic() < END_AT - 1:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(hello(32, 32))
            k = rng.randrange(50, 400)
            pay = events_payload(ev["t"][:k] - ev["t"][0], ev["x"][:k], ev["y"][:k], ev["p"][:k])
            full = frame(2, pay)
            w.write(full[: rng.randrange(1, len(full))])
            await w.drain()
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            w.transport.abort() if rng.random() < 0.5 else w.close()
            stats["rude"] += 1
        except OSError:
            pass
        await asyncio.sleep(rng.uniform(0.1, 1.0))

async def garbage(cid):
    """Random bytes, sometimes after a valid HELLO; reads until the server hangs up."""
    rng = random.Random(2000 + cid)
    while time.monotonic() < END_AT - 1:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 3000)))
            w.write((hello(32, 32) if rng.random() < 0.5 else b"") + junk)
            await w.drain()
            try:
                await asyncio.wait_for(r.read(), timeout=5)
            except asyncio.TimeoutError:
                pass
            w.close()
            stats["garbage"] += 1
        except OSError:
            pass
        await asyncio.sleep(rng.uniform(0.1, 1.0))

async def monitor():
    rss_series = []
    last_t, last_n = time.monotonic(), 0
    print(f"{'time':>6} {'answers/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8} "
          f"{'open':>5} {'sessions':>8} {'rude':>6} {'garbage':>7} {'lost':>5}", flush=True)
    while time.monotonic() < END_AT + 5:
        await asyncio.sleep(30 - (time.monotonic() - T0) % 30)
        now = time.monotonic()
        lat = sorted(stats["lat"])
        stats["lat"] = []
        n = stats["answers"]
        rss = rss_kb()
        rss_series.append((now - T0, rss))
        p50 = 1e3 * lat[len(lat) // 2] if lat else float("nan")
        p99 = 1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        print(f"{now - T0:6.0f} {(n - last_n) / (now - last_t):10.0f} {p50:8.2f} {p99:8.2f} "
              f"{rss / 1024:8.1f} {connections():5d} {stats['sessions']:8d} {stats['rude']:6d} "
              f"{stats['garbage']:7d} {stats['lost']:5d}", flush=True)
        last_t, last_n = now, n
        if now > END_AT:
            break
    return rss_series

async def main():
    nslow = max(1, nclients // 8)
    nrude = max(1, nclients // 16)
    ngarb = max(1, nclients // 16)
    nbeh = nclients - nslow - nrude - ngarb
    mon = asyncio.create_task(monitor())
    tasks = [behaved(i, False) for i in range(nbeh)] + \
            [behaved(nbeh + i, True) for i in range(nslow)] + \
            [rude(i) for i in range(nrude)] + [garbage(i) for i in range(ngarb)]
    print(f"soak: {nbeh} well-behaved, {nslow} slow, {nrude} disconnecting mid-frame, "
          f"{ngarb} garbage clients", flush=True)
    await asyncio.gather(*tasks)
    series = await mon
    ok = True
    # every client done and every session closed: the server holds no session now
    for _ in range(60):
        if connections() == 0:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)
    idle = rss_kb()
    last = [r for (t, r) in series if t >= seconds * 2 / 3] or [series[-1][1]]
    peak = max(r for _, r in series)
    print(f"soak: RSS over the last third {min(last) / 1024:.1f} .. {max(last) / 1024:.1f} MB, "
          f"largest {peak / 1024:.1f} MB; after every session closed {idle / 1024:.1f} MB "
          f"({connections()} connections open)")
    if max(last) > min(last) * 1.05:
        print("soak: FAIL: the server's RSS still grew over the last third of the run")
        ok = False
    if idle > peak:
        print("soak: FAIL: the server's RSS grew after every session had closed")
        ok = False
    print(f"soak: {stats['sessions']} well-behaved sessions, {stats['slow_answers']} answers "
          f"taken by slow clients, {stats['bad']} sessions with answers missing "
          f"({stats['lost']} lost), {stats['rude']} mid-frame hang-ups, {stats['garbage']} "
          f"garbage connections, {stats['busy']} refused busy")
    for p in problems[:20]:
        print("soak:   " + p)
    if stats["bad"] or stats["lost"]:
        print("soak: FAIL: answers lost")
        ok = False
    sys.exit(0 if ok else 1)

asyncio.run(main())
PY
DRIVER=$?
kill -TERM "$SPID"
wait "$SPID"
SERVER=$?
trap - EXIT
echo "soak: server exit $SERVER: $(tail -1 "$OUT/serve.err")"
[ "$DRIVER" -eq 0 ] && [ "$SERVER" -eq 0 ]
