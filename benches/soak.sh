#!/usr/bin/env bash
# Soak: nothing lost under rotation, a misbehaving webhook and kill -9 (a benchmark, not a
# test: it runs for minutes).
#
#   SOAK_SECS=600 bash benches/soak.sh
#
# For SOAK_SECS (default 600) seconds:
# - a writer appends numbered lines to app.log (about RATE lines/s, default 2000) and every
#   ROTATE_SECS (default 7) rotates it, alternating logrotate's two ways: rename (app.log to
#   app.log.1, a new app.log) and copytruncate (app.log copied to app.log.1, then cut to 0
#   bytes; the writer pauses until DeepSentry's checkpoint reaches the end of the file,
#   because what is written after a reader's last read and before the cut is lost to any
#   reader, and a reader held back by a failing sink is behind);
# - DeepSentry tails app.log into a webhook sink; the HTTP server behind it answers 503 and
#   429 (with Retry-After) in bursts and goes away entirely for a few seconds at a time;
# - DeepSentry is killed with SIGKILL at random moments (every 5 to 30 s) and started again.
# Then the writer stops, DeepSentry drains and exits, and the lines the server received are
# compared with the lines written. The table: lines in, delivered, lost (must be 0),
# duplicated (bounded by what was in flight at each kill), kills, rotations, peak RSS.
#
# DEEPSENTRY_BIN=path skips the release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${DEEPSENTRY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --locked -p deepsentry >&2)
  DEEPSENTRY_BIN=$root/target/release/deepsentry
fi
work=$(mktemp -d)
echo "work dir: $work" >&2
trap 'pkill -KILL -P $$ 2>/dev/null || true; [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT

python3 - "$DEEPSENTRY_BIN" "$work" "${SOAK_SECS:-600}" "${RATE:-2000}" "${ROTATE_SECS:-7}" <<'EOF'
import http.server, json, os, random, shutil, signal, socket, subprocess, sys, threading, time

binary, work, soak_secs, rate, rotate_secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
log = os.path.join(work, "app.log")
received_path = os.path.join(work, "received.txt")
rng = random.Random(7)

# --- The webhook server: bursts of 503 and 429, and outages where nothing listens.
port_holder = socket.socket(); port_holder.bind(("127.0.0.1", 0)); port = port_holder.getsockname()[1]; port_holder.close()
received = open(received_path, "a", buffering=1)
lock = threading.Lock()
state = {"mode": "ok", "until": 0.0}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        mode = state["mode"]
        if mode == "503":
            self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers(); return
        if mode == "429":
            self.send_response(429); self.send_header("Retry-After", "1"); self.send_header("Content-Length", "0"); self.end_headers(); return
        with lock:
            for line in body.decode().splitlines():
                if line.strip():
                    received.write(json.loads(line)["message"] + "\n")
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()

class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

def serve_forever():
    while not stop.is_set():
        server = Server(("127.0.0.1", port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True); thread.start()
        # Up for a while, with bursts of errors; then gone for a few seconds.
        up_until = time.time() + rng.uniform(10, 25)
        while time.time() < up_until and not stop.is_set():
            state["mode"] = rng.choice(["ok", "ok", "ok", "503", "429"])
            time.sleep(rng.uniform(0.5, 3))
        state["mode"] = "ok"
        server.shutdown(); server.server_close()
        if not stop.is_set():
            time.sleep(rng.uniform(1, 5))
    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

stop = threading.Event()
# Held across a copytruncate; a kill waits for it (see the writer).
truncation = threading.Lock()

def caught_up(path, until):
    """Waits until DeepSentry's checkpoint of `path` reaches its end (everything written
    was delivered), or `until`."""
    st = os.stat(path)
    key = f"{st.st_dev}:{st.st_ino}"
    while time.time() < until:
        try:
            files = json.load(open(os.path.join(work, "data", "app", "checkpoints.json")))["files"]
            if files.get(key, {}).get("offset", -1) >= os.stat(path).st_size:
                return True
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    print("copytruncate without the reader caught up (waited 60 s)", file=sys.stderr)
    return False

# --- The writer, with rotation.
written = [0]
rotations = [0]
def write_forever():
    out = open(log, "a")
    next_rotation = time.time() + rotate_secs
    copytruncate = False
    while not stop.is_set():
        start = time.time()
        for _ in range(max(1, rate // 20)):
            out.write(f"soak line {written[0]:09d} some payload to make it realistic\n")
            written[0] += 1
        out.flush()
        if time.time() >= next_rotation:
            if copytruncate:
                # No reader can keep what is written after it last read and before the cut:
                # the cut happens while DeepSentry runs and has had a second to catch up.
                with truncation:
                    caught_up(log, time.time() + 60)
                    shutil.copyfile(log, log + ".1")
                    out.truncate(0); out.seek(0)
            else:
                out.close(); os.replace(log, log + ".1"); out = open(log, "a")
            rotations[0] += 1
            print(f"rotation {rotations[0]} ({'copytruncate' if copytruncate else 'rename'}) after line {written[0] - 1} at {time.time() - began:.1f} s", file=sys.stderr)
            copytruncate = not copytruncate
            next_rotation = time.time() + rotate_secs
        time.sleep(max(0.0, 0.05 - (time.time() - start)))
    out.close()

config = os.path.join(work, "soak.yml")
open(config, "w").write(f"""data_dir: {work}/data
sources:
  app:
    type: file
    include: ['{log}']
    poll_interval_ms: 50
    rotate_wait_secs: 5
sinks:
  hook:
    type: webhook
    inputs: [app]
    url: http://127.0.0.1:{port}/alerts
    encoding: json
    max_events: 500
    timeout_secs: 0.5
    retry_max_backoff_secs: 2
""")
open(log, "a").close()
threading.Thread(target=serve_forever, daemon=True).start()
time.sleep(0.5)
writer = threading.Thread(target=write_forever, daemon=True); writer.start()

stderr = open(os.path.join(work, "deepsentry.log"), "a")
def start():
    return subprocess.Popen([binary, "run", "-c", config], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr,
                            env={**os.environ, "DEEPSENTRY_LOG": "warn"})

def peak_rss_kb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

kills, peak = 0, 0
began = time.time()
deadline = time.time() + soak_secs
process = start()
while time.time() < deadline:
    time.sleep(min(rng.uniform(5, 30), max(0.0, deadline - time.time())))
    if time.time() >= deadline:
        break
    peak = max(peak, peak_rss_kb(process.pid))
    with truncation:
        process.send_signal(signal.SIGKILL); process.wait(); kills += 1
        print(f"kill {kills} at line {written[0]} at {time.time() - began:.1f} s", file=sys.stderr)
        process = start()

# --- Drain: the writer stops, the server stays up and well, DeepSentry catches up.
stop.set(); writer.join()
state["mode"] = "ok"
total = written[0]
def delivered_lines():
    with lock:
        received.flush()
    return open(received_path).read().split("\n")[:-1]
settle_deadline = time.time() + 120
while time.time() < settle_deadline:
    if len(set(delivered_lines())) >= total:
        break
    time.sleep(1)
time.sleep(2)
peak = max(peak, peak_rss_kb(process.pid))
process.send_signal(signal.SIGTERM)
try:
    process.wait(timeout=60)
except subprocess.TimeoutExpired:
    process.kill()

lines = delivered_lines()
distinct = set(lines)
expected = {f"soak line {i:09d} some payload to make it realistic" for i in range(total)}
missing = sorted(int(line.split()[2]) for line in expected - distinct)
lost = len(missing)
ranges = []
for n in missing:
    if ranges and ranges[-1][1] == n - 1:
        ranges[-1][1] = n
    else:
        ranges.append([n, n])
if ranges:
    print("lost line ranges: " + ", ".join(f"{a}-{b}" for a, b in ranges[:10]), file=sys.stderr)
duplicated = len(lines) - len(distinct)
print("| lines in | delivered | lost | duplicated | kills | rotations | peak RSS |")
print("|---:|---:|---:|---:|---:|---:|---:|")
print(f"| {total} | {len(distinct & expected)} | {lost} | {duplicated} | {kills} | {rotations[0]} | {peak / 1024:.1f} MiB |")
print()
print(f"{soak_secs:.0f} s at about {rate} lines/s; rotation every {rotate_secs:.0f} s (rename and "
      "copytruncate alternating; a rename may come while DeepSentry is down, a copytruncate "
      "only once it has delivered the whole file: what is written between a reader's last "
      "read and the cut is gone for any reader).")
sys.exit(1 if lost else 0)
EOF
