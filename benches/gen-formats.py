#!/usr/bin/env python3
"""Generates logs in common shapes the loghub samples lack, for benches/formats.sh.

    python3 benches/gen-formats.py OUT_DIR [SEED]

Writes OUT_DIR/loghub/<Name>_2k.log, 2,000 lines each, in the layout benches/eval.sh reads:

- Access: a web server's combined access log (no labels: every line is normal).
- Json: a service's JSON lines with `level`, `msg` and a user-name field.
- Klog: Kubernetes' klog (`I0304 10:00:01.173945    4242 file.go:112] ...`).
- Log4j: Hadoop's and Spark's console pattern (`24/03/04 10:00:01 INFO ...`).
- Logfmt: Go's `time=... level=info msg="..." key=value` lines.
- Chinese: a Java service logging in Chinese, a language written without spaces, numbers
  and ids glued to the words (`用户12345登录成功`).
- Rare: logfmt lines whose one error statement came three times in the first 1,200 lines
  and comes back as a burst (every other line of 40) in the replayed part: known, but rare.
- Outage: Access's shape, labelled: in the replayed part the backend is down for 40 lines
  and seven requests in ten fail with a 502, 503 or 504 (the anomalous lines); the first
  1,200 lines hold no server error, as a healthy service's.
- Names: a shop's log whose statements name a customer by first and last name (two
  words the normalizer keeps), error lines included, with the new error statement's bursts.
- Requests: a service's requests, five at a time interleaved in one stream, each line naming
  its request id (`[req-...]`); in the replayed part three requests skip their `auth ok`
  step, and every line of those is labelled anomalous.

Every value a real system varies varies here too, with long tails: user names (one in ten
never seen before), pod names, paths, ids, sizes, durations, IP addresses. The labelled files
start each line with `-` (normal) or `A` (anomalous, the BGL convention); their first 1,200
lines are normal; in Json's, Klog's, Log4j's, Logfmt's, Chinese's and Names', lines
1,201-2,000 hold three bursts (3, 2 and 4 lines) of one error statement the first 1,200 never
showed, so a detector that learns new templates should flag the first five of its nine lines.
"""
import datetime
import json
import os
import random
import sys

LINES = 2000
TRAIN = 1200
# Where the bursts of the anomalous statement start in the replayed part, and their length.
BURSTS = {150: 3, 420: 2, 700: 4}

out_dir = sys.argv[1]
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
         "mallory", "nick", "olivia", "peggy", "rupert", "sybil", "trent", "victor"]
WORDS = ["blue", "red", "green", "shoes", "shirt", "hat", "lamp", "desk", "chair", "book",
         "phone", "cable", "mouse", "bag", "watch", "ring", "sofa", "bed", "rug", "cup"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "curl/8.4.0",
    "python-requests/2.31.0",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
]


def user():
    """A user name: a few are most of the traffic, one in ten is new."""
    if rng.random() < 0.1:
        return "".join(rng.choice("abcdefghijklmnop") for _ in range(6))
    return NAMES[min(int(rng.paretovariate(0.8)) - 1, len(NAMES) - 1)]


def ip():
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


def pod():
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-" + "".join(
        rng.choice("abcdef0123456789") for _ in range(5))


def access(t, anomalous):
    """A line of a web server's combined access log; an anomalous one is a server error."""
    r = rng.random()
    if r < 0.3:
        path = f"/api/users/{rng.randrange(1, 100000)}"
    elif r < 0.5:
        path = f"/products/{rng.choice(WORDS)}-{rng.choice(WORDS)}"
    elif r < 0.6:
        path = f"/search?q={rng.choice(WORDS)}"
    elif r < 0.8:
        path = rng.choice(["/", "/login", "/about", "/static/css/app.css", "/favicon.ico"])
    else:
        path = f"/static/img/{rng.choice(WORDS)}.png"
    method = "POST" if rng.random() < 0.1 else "GET"
    if anomalous:
        status = rng.choice([502, 503, 503, 503, 504])
    else:
        status = rng.choices([200, 304, 404, 302], [80, 10, 5, 5])[0]
    return (f'{ip()} - - [{t:%d/%b/%Y:%H:%M:%S} +0000] "{method} {path} HTTP/1.1" {status} '
            f'{rng.randrange(100, 90000)} "-" "{rng.choice(AGENTS)}"')


def json_line(t, anomalous):
    record = {"ts": t.isoformat() + "Z"}
    if anomalous:
        record.update(level="error", msg="database connection lost", db="orders-primary",
                      retry_in_ms=500)
        return json.dumps(record)
    level = rng.choices(["info", "warn", "error", "debug"], [70, 8, 2, 20])[0]
    record["level"] = level
    if level == "debug":
        record.update(msg="cache lookup", key=f"user:{rng.randrange(1, 5000)}",
                      hit=rng.random() < 0.8)
    elif level == "info" and rng.random() < 0.5:
        record.update(msg="request completed", method="GET",
                      path=f"/api/v1/orders/{rng.randrange(1, 99999)}", status=200,
                      duration_ms=round(rng.random() * 300, 2), user=user())
    elif level == "info":
        record.update(msg="user logged in", user=user(), ip=ip())
    elif level == "warn":
        record.update(msg="slow query", table=rng.choice(["orders", "users", "items"]),
                      duration_ms=round(500 + rng.random() * 3000, 1))
    else:
        record.update(msg="payment declined", user=user(),
                      reason=rng.choice(["insufficient funds", "card expired"]))
    return json.dumps(record)


def klog(t, anomalous):
    stamp = f"{t:%m%d %H:%M:%S}.{t.microsecond:06d} {4242:>7}"
    if anomalous:
        return (f'E{stamp} runtime.go:78] "Observed a panic" panic="runtime error: invalid '
                f'memory address or nil pointer dereference"')
    level = rng.choices("IWE", [90, 8, 2])[0]
    ns = rng.choice(["default", "kube-system", "monitoring", "payments", "web"])
    name = pod()
    messages = {
        "I": [
            f'controller.go:{rng.choice([112, 240, 318])}] "Reconciling" pod="{ns}/{name}"',
            f'controller.go:455] "Synced" pod="{ns}/{name}" '
            f'duration="{rng.random() * 200:.1f}ms"',
            f"leaderelection.go:258] successfully renewed lease {ns}/controller",
            f"reflector.go:{rng.choice([219, 255])}] Listing and watching *v1.Pod from "
            f"pkg/mod/k8s.io/client-go/tools/cache/reflector.go:229",
            f'event.go:294] "Event occurred" object="{ns}/{name}" kind="Pod" '
            f'reason="{rng.choice(["Scheduled", "Pulled", "Created", "Started"])}"',
        ],
        "W": [
            "warnings.go:70] metadata.name: this is used in Pod names and hostnames",
            f'controller.go:501] "Retrying" pod="{ns}/{name}" attempt={rng.randrange(1, 4)}',
        ],
        "E": [
            f'controller.go:520] "Failed to sync" err="Operation cannot be fulfilled on pods '
            f'\\"{name}\\": the object has been modified" pod="{ns}/{name}"',
        ],
    }
    return f"{level}{stamp} {rng.choice(messages[level])}"


def log4j(t, anomalous):
    stamp = f"{t:%y/%m/%d %H:%M:%S}"
    task, stage = rng.randrange(0, 500), rng.randrange(0, 40)
    if anomalous:
        return (f"{stamp} ERROR executor.Executor: Exception in task {task}.0 in stage "
                f"{stage}.0 (TID {task * 7}): java.lang.OutOfMemoryError: Java heap space")
    if rng.random() < 0.05:
        return (f"{stamp} WARN storage.BlockManager: Block rdd_{stage}_{task} could not be "
                f"removed as it was not found on disk or in memory")
    message = rng.choice([
        f"executor.Executor: Running task {task}.0 in stage {stage}.0 (TID {task * 7})",
        f"executor.Executor: Finished task {task}.0 in stage {stage}.0 (TID {task * 7}). "
        f"{rng.randrange(900, 3000)} bytes result sent to driver",
        f"storage.BlockManager: Found block rdd_{stage}_{task} locally",
        f"storage.MemoryStore: Block broadcast_{stage} stored as values in memory (estimated "
        f"size {rng.randrange(1, 900)}.{rng.randrange(10)} KB, free "
        f"{rng.randrange(1, 900)}.{rng.randrange(10)} MB)",
        f"broadcast.TorrentBroadcast: Reading broadcast variable {stage} took "
        f"{rng.randrange(2, 40)} ms",
    ])
    return f"{stamp} INFO {message}"


def logfmt(t, anomalous):
    stamp = f"time={t:%Y-%m-%dT%H:%M:%S}Z"
    if anomalous:
        return (f'{stamp} level=error msg="upstream unavailable" upstream=payments '
                f'attempts=3 err="dial tcp {ip()}:443: connect: connection refused"')
    r = rng.random()
    if r < 0.6:
        return (f'{stamp} level=info msg="request served" method=GET '
                f'path=/api/v2/carts/{rng.randrange(1, 9999)} status=200 user={user()} '
                f'duration={rng.randrange(1, 900)}ms')
    if r < 0.8:
        return f'{stamp} level=debug msg="cache refreshed" entries={rng.randrange(1, 5000)}'
    if r < 0.97:
        return f'{stamp} level=info msg="session started" user={user()} remote={ip()}'
    return (f'{stamp} level=warn msg="rate limited" user={user()} '
            f'limit={rng.choice([100, 500])}')


REQUEST_STEPS = [
    ["request received", "auth ok", "db query done", "response sent"],
    ["request received", "auth ok", "cache hit", "response sent"],
    ["request received", "auth ok", "db query done", "cache stored", "response sent"],
]


def requests_log():
    """Request logs, five requests open at a time: (anomalous, text) for each line. Requests
    that start in the replayed part at three places skip `auth ok`."""
    t = datetime.datetime(2024, 3, 4, 10, 0, 0)
    lines, open_requests = [], []
    skip_at = sorted(TRAIN + start for start in BURSTS)
    while len(lines) < LINES:
        while len(open_requests) < 5:
            steps = list(rng.choice(REQUEST_STEPS))
            # The first request to start after each of the replay's places skips its auth.
            bad = bool(skip_at) and len(lines) >= skip_at[0]
            if bad:
                skip_at.pop(0)
                steps.remove("auth ok")
            open_requests.append([f"{rng.getrandbits(64):016x}", steps, 0, bad])
        k = rng.randrange(len(open_requests))
        request, steps, step, bad = open_requests[k]
        t += datetime.timedelta(milliseconds=rng.randrange(5, 400))
        lines.append((bad, f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} INFO "
                           f"[req-{request}] {steps[step]} in {rng.randrange(1, 90)} ms"))
        open_requests[k][2] += 1
        if open_requests[k][2] == len(steps):
            open_requests.pop(k)
    return lines


CHINESE = [
    ("INFO", "用户{user}登录成功"), ("INFO", "订单{n}已创建，金额{amount}元"),
    ("INFO", "订单{n}支付完成"), ("INFO", "用户{user}退出登录"),
    ("INFO", "库存同步完成，共{n}条"), ("WARN", "接口响应缓慢，耗时{n}毫秒"),
    ("INFO", "缓存命中率{amount}"), ("ERROR", "用户{user}登录失败，密码错误"),
]
CHINESE_WEIGHTS = [30, 20, 15, 15, 5, 5, 8, 2]


def chinese(t, anomalous):
    if anomalous:
        level, message = "ERROR", f"数据库连接中断，正在重试第{rng.randrange(1, 4)}次"
    else:
        level, message = rng.choices(CHINESE, CHINESE_WEIGHTS)[0]
        message = message.format(user=rng.randrange(1000, 99999), n=rng.randrange(1, 99999),
                                 amount=f"{rng.random() * 100:.1f}")
    return (f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d} {level} [main] "
            f"com.shop.Service - {message}")


# Where Rare's error statement comes in training (as a normal line) and in the replay.
RARE_IN_TRAINING = {100, 500, 900}
RARE_BURST = set(range(TRAIN + 300, TRAIN + 340, 2))

NEW_STATEMENT_BURSTS = {i for start, length in BURSTS.items()
                        for i in range(TRAIN + start, TRAIN + start + length)}
# Each log: how its lines are made, whether it is labelled, which lines are anomalous, and
# which lines carry the anomalous statement as a normal line.
FORMATS = {
    "Access": (access, False, set(), set()),
    "Json": (json_line, True, NEW_STATEMENT_BURSTS, set()),
    "Klog": (klog, True, NEW_STATEMENT_BURSTS, set()),
    "Log4j": (log4j, True, NEW_STATEMENT_BURSTS, set()),
    "Logfmt": (logfmt, True, NEW_STATEMENT_BURSTS, set()),
    "Rare": (logfmt, True, RARE_BURST, RARE_IN_TRAINING),
}


def write_log(name, line, labelled, anomalous, normal_too):
    """Writes `name`'s 2,000 lines, made one by one by `line`."""
    t = datetime.datetime(2024, 3, 4, 10, 0, 0)
    with open(os.path.join(out_dir, "loghub", f"{name}_2k.log"), "w") as out:
        for i in range(LINES):
            t += datetime.timedelta(seconds=rng.expovariate(1 / 3))
            bad = i in anomalous
            text = line(t, bad or i in normal_too)
            out.write(f"{'A' if bad else '-'} {text}\n" if labelled else f"{text}\n")


os.makedirs(os.path.join(out_dir, "loghub"), exist_ok=True)
# In this order, so that each log is the same at a seed whatever logs were added after it.
for name, (line, labelled, anomalous, normal_too) in FORMATS.items():
    write_log(name, line, labelled, anomalous, normal_too)
with open(os.path.join(out_dir, "loghub", "Requests_2k.log"), "w") as out:
    for bad, text in requests_log():
        out.write(f"{'A' if bad else '-'} {text}\n")
write_log("Chinese", chinese, True, NEW_STATEMENT_BURSTS, set())
# An outage: for 40 lines of the replay the backend is down and seven requests in ten fail
# with 502-504 (the others served from cache); the first 1,200 lines hold no server error.
outage_rng = random.Random(rng.random())
OUTAGE = {i for i in range(TRAIN + 500, TRAIN + 540) if outage_rng.random() < 0.7}
write_log("Outage", access, True, OUTAGE, set())


FIRST = ["Jane", "John", "Maria", "Wei", "Ahmed", "Olga", "Pedro", "Yuki", "Anna", "Liam",
         "Noah", "Emma", "Sofia", "Lucas", "Mia", "Ivan"]
LAST = ["Smith", "Garcia", "Chen", "Khan", "Petrova", "Silva", "Tanaka", "Muller", "Rossi",
        "Novak", "Kim", "Brown", "Lopez", "Wong", "Ali", "Berg"]


def names(t, anomalous):
    """A shop's log naming customers by first and last name: two unmasked words."""
    stamp = f"{t:%Y-%m-%d %H:%M:%S},{t.microsecond // 1000:03d}"
    worker = f"[worker-{rng.randrange(1, 9)}]"
    if anomalous:
        return f"{stamp} ERROR {worker} billing - ledger write failed, retrying"
    customer = f'"{rng.choice(FIRST)} {rng.choice(LAST)}"'
    r = rng.random()
    if r < 0.4:
        return (f"{stamp} INFO {worker} orders - order {rng.randrange(10**5, 10**6)} placed "
                f"by customer {customer}")
    if r < 0.7:
        return f"{stamp} INFO {worker} auth - customer {customer} signed in"
    if r < 0.95:
        return f"{stamp} DEBUG {worker} cache - refreshed {rng.randrange(1, 500)} entries"
    return f"{stamp} ERROR {worker} payments - card declined for customer {customer}"


write_log("Names", names, True, NEW_STATEMENT_BURSTS, set())
