//! The `syslog` source, fed by real senders: util-linux `logger` over UDP, TCP (both framings)
//! and a Unix socket, and an rsyslog daemon forwarding to it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

/// The JSON lines a sink has written to `path` so far, parsed (a line being written is not).
fn json_events_written_so_far(path: &Path) -> Vec<serde_json::Value> {
    read_lines(path)
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn logger(args: &[&str]) {
    let output = Command::new("logger")
        .args(args)
        .output()
        .expect("run logger");
    assert!(
        output.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until the run's log says every one of its `n` sources listens.
fn wait_listening(s: &Scratch, n: usize) {
    let listening = || {
        s.stderr()
            .lines()
            .filter(|l| l.contains("listening") && l.contains("source="))
            .count()
    };
    let up = wait_until(WAIT, || listening() >= n);
    assert!(up, "{}", s.stderr());
}

fn find<'a>(events: &'a [serde_json::Value], text: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["message"] == text)
        .unwrap_or_else(|| panic!("no event `{text}` in {events:#?}"))
}

#[test]
fn logger_reaches_the_source_over_udp_tcp_and_a_unix_socket() {
    let s = Scratch::new();
    let (udp, tcp) = (free_port(), free_port());
    let socket = s.path("log.sock");
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  \
             udp:\n    type: syslog\n    mode: udp\n    address: 127.0.0.1:{udp}\n  \
             tcp:\n    type: syslog\n    mode: tcp\n    address: 127.0.0.1:{tcp}\n  \
             local:\n    type: syslog\n    mode: unix\n    address: {}\n\
             sinks:\n  out:\n    type: file\n    inputs: [udp, tcp, local]\n    path: {{dir}}/out.json\n    \
             encoding: json\n",
            socket.display()
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_listening(&s, 3);
    let (udp, tcp) = (udp.to_string(), tcp.to_string());
    logger(&[
        "-d",
        "-n",
        "127.0.0.1",
        "-P",
        &udp,
        "--rfc5424",
        "-t",
        "billing",
        "-p",
        "local3.err",
        "--msgid",
        "PAY",
        "--sd-id",
        "order@32473",
        "--sd-param",
        "id=\"42\"",
        "payment declined",
    ]);
    logger(&[
        "-T",
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "--rfc3164",
        "-t",
        "nginx",
        "-p",
        "daemon.warning",
        "upstream timed out",
    ]);
    logger(&[
        "-T",
        "-n",
        "127.0.0.1",
        "-P",
        &tcp,
        "--rfc5424",
        "--octet-count",
        "-t",
        "worker",
        "-p",
        "user.info",
        "job 7 done",
    ]);
    logger(&[
        "-u",
        socket.to_str().unwrap(),
        "-t",
        "cron",
        "-p",
        "cron.notice",
        "nightly run started",
    ]);
    let out = s.path("out.json");
    let arrived = wait_until(WAIT, || json_events_written_so_far(&out).len() >= 4);
    stop(&s, &mut child);
    let events = json_events_written_so_far(&out);
    assert!(arrived, "{events:#?}\n{}", s.stderr());

    let udp_event = find(&events, "payment declined");
    assert_eq!(udp_event["source"], "udp");
    assert_eq!(udp_event["appname"], "billing");
    assert_eq!(udp_event["facility"], "local3");
    assert_eq!(udp_event["severity"], "err");
    assert_eq!(udp_event["msgid"], "PAY");
    assert_eq!(udp_event["structured_data"]["order@32473"]["id"], "42");
    assert!(udp_event["hostname"].is_string());
    assert!(udp_event["procid"].is_null() || udp_event["procid"].is_string());

    let newline_framed = find(&events, "upstream timed out");
    assert_eq!(newline_framed["source"], "tcp");
    assert_eq!(newline_framed["appname"], "nginx");
    assert_eq!(newline_framed["severity"], "warning");
    assert_eq!(newline_framed["facility"], "daemon");

    let octet_counted = find(&events, "job 7 done");
    assert_eq!(octet_counted["appname"], "worker");
    assert_eq!(octet_counted["severity"], "info");

    let local = find(&events, "nightly run started");
    assert_eq!(local["source"], "local");
    assert_eq!(local["appname"], "cron");
    assert_eq!(local["facility"], "cron");
    assert_eq!(local["severity"], "notice");
    // Dated by the message's own header, which logger sets to now: within the last minute.
    let at =
        chrono::DateTime::parse_from_rfc3339(udp_event["timestamp"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_seconds().abs() < 120);
    assert!(!socket.exists(), "the socket file is removed at stop");
}

/// rsyslogd reading a Unix socket of its own and forwarding everything over TCP with octet
/// counting, as a relay in front of DeepSentry would.
struct Relay {
    process: Child,
}

impl Relay {
    fn start(dir: &Path, socket: &Path, target_port: u16) -> Self {
        let process = crate::syslog::rsyslogd(
            dir,
            &format!(
                "module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{socket}\" CreatePath=\"on\")\n\
                 *.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{target_port}\" \
                 protocol=\"tcp\" TCP_Framing=\"octet-counted\" \
                 template=\"RSYSLOG_SyslogProtocol23Format\")\n",
                socket = socket.display(),
            ),
        );
        let work = dir.join("rsyslog");
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()),
            "rsyslogd did not open its socket: {}",
            std::fs::read_to_string(work.join("rsyslogd.err")).unwrap_or_default()
        );
        Relay { process }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn rsyslog_forwards_to_the_source_over_tcp() {
    let s = Scratch::new();
    let tcp = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  relay:\n    type: syslog\n    mode: tcp\n    address: 127.0.0.1:{tcp}\n\
             sinks:\n  out:\n    type: file\n    inputs: [relay]\n    path: {{dir}}/out.json\n    \
             encoding: json\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    wait_listening(&s, 1);
    let socket = s.path("relay.sock");
    let _relay = Relay::start(s.dir.path(), &socket, tcp);
    for i in 0..20 {
        logger(&[
            "-u",
            socket.to_str().unwrap(),
            "-t",
            "shop",
            "-p",
            "local0.err",
            &format!("checkout {i} failed: card expired"),
        ]);
    }
    let out = s.path("out.json");
    let arrived = wait_until(WAIT, || {
        json_events_written_so_far(&out)
            .iter()
            .filter(|e| e["appname"] == "shop")
            .count()
            >= 20
    });
    stop(&s, &mut child);
    let events = json_events_written_so_far(&out);
    assert!(arrived, "{events:#?}\n{}", s.stderr());
    let shop: Vec<&serde_json::Value> = events.iter().filter(|e| e["appname"] == "shop").collect();
    for (i, event) in shop.iter().enumerate() {
        assert_eq!(
            event["message"],
            format!("checkout {i} failed: card expired")
        );
        assert_eq!(event["severity"], "err");
        assert_eq!(event["facility"], "local0");
    }
}

#[test]
fn the_shipped_syslog_server_pipeline_scores_what_logger_sends() {
    let s = Scratch::new();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = s.start_shipped("syslog-server.yml", &[("SYSLOG_LISTEN", &listen)]);
    wait_listening(&s, 2);
    let port = port.to_string();
    // The detector warms up on the usual traffic (`min_samples`) before it alerts.
    let usual: String = (0..40)
        .map(|i| format!("session opened for user u{i} by (uid=0)\n"))
        .collect();
    std::fs::write(s.path("usual.log"), usual).unwrap();
    let send = |tag: &str, priority: &str, what: &[&str]| {
        let mut args = vec![
            "-T",
            "-n",
            "127.0.0.1",
            "-P",
            &port,
            "--rfc5424",
            "-t",
            tag,
            "-p",
            priority,
        ];
        args.extend_from_slice(what);
        logger(&args);
    };
    send(
        "sshd",
        "auth.info",
        &["-f", s.path("usual.log").to_str().unwrap()],
    );
    send(
        "kernel",
        "kern.crit",
        &["EXT4-fs error (device sda1): ext4_find_entry: reading directory lblock 0"],
    );
    let shown = wait_until(WAIT, || s.console().contains("EXT4-fs error"));
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(shown, "console:\n{}\nstderr:\n{}", s.console(), s.stderr());
    assert!(status.success(), "{}", s.stderr());
    let text = s.console();
    let alert = text.lines().find(|l| l.contains("EXT4-fs error")).unwrap();
    assert!(alert.contains("ANOMALY"), "{text}");
    // The message alone: the syslog header was decoded into fields.
    assert!(alert.contains("\"EXT4-fs error"), "{text}");
}
