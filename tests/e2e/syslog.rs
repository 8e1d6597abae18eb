//! The `syslog` sink against a real rsyslog daemon, started per test on loopback ports with its
//! own configuration, writing what it receives to a file the test reads back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// An rsyslogd in the foreground, listening on UDP and TCP, logging every message as
/// `facility.severity|app-name|msgid|structured-data|msg`.
pub struct Rsyslog {
    process: Child,
    received: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path, udp_port: u16, tcp_port: u16) -> Self {
        let received = dir.join("received.log");
        let work = dir.join("rsyslog");
        let process = rsyslogd(
            dir,
            &format!(
                "module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
                 input(type=\"imuxsock\" Socket=\"{work}/log.sock\" CreatePath=\"on\")\n\
                 module(load=\"imudp\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp_port}\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp_port}\")\n\
                 template(name=\"fields\" type=\"string\" string=\"%syslogfacility-text%.%syslogseverity-text%|%app-name%|%msgid%|%structured-data%|%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{received}\" template=\"fields\")\n",
                work = work.display(),
                received = received.display(),
            ),
        );
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", tcp_port)).is_ok()
        });
        assert!(
            up,
            "rsyslogd did not listen: {}",
            std::fs::read_to_string(work.join("rsyslogd.err")).unwrap_or_default()
        );
        Rsyslog { process, received }
    }

    pub fn lines(&self) -> Vec<String> {
        read_lines(&self.received)
    }
}

/// Starts rsyslogd in the foreground with `rules` after a `global()` naming its work
/// directory (`DIR/rsyslog`, which also holds its pid file and its stderr, `rsyslogd.err`).
pub fn rsyslogd(dir: &Path, rules: &str) -> Child {
    let work = dir.join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("rsyslog.conf");
    std::fs::write(
        &config,
        format!("global(workDirectory=\"{}\")\n{rules}", work.display()),
    )
    .unwrap();
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("rsyslogd is not installed: apt-get install rsyslog (tests/run.sh does)");
    Command::new(bin)
        .args(["-n", "-f"])
        .arg(&config)
        .arg("-i")
        .arg(work.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("rsyslogd.err")).unwrap())
        .spawn()
        .expect("start rsyslogd")
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The message parts (rsyslog keeps the space after an RFC 3164 header in `%msg%`).
fn messages(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| {
            let msg = l.rsplit('|').next().unwrap();
            msg.strip_prefix(' ').unwrap_or(msg)
        })
        .collect()
}

#[test]
fn udp_lines_arrive_with_facility_severity_and_app_name() {
    let s = Scratch::new();
    let (udp, tcp) = (free_port(), free_port());
    let daemon = Rsyslog::start(s.dir.path(), udp, tcp);
    let input: Vec<String> = (0..200)
        .map(|i| format!("line {i} of the udp test"))
        .collect();
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: syslog\n    mode: udp\n    address: 127.0.0.1:{udp}\n    encoding: text\n    \
             protocol: rfc3164\n    facility: local3\n    severity: warning\n"
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let ok = wait_until(Duration::from_secs(10), || {
        daemon.lines().len() >= input.len()
    });
    let received = daemon.lines();
    assert!(ok, "{} of {} arrived", received.len(), input.len());
    assert_eq!(messages(&received), input);
    assert!(
        received
            .iter()
            .all(|l| l.starts_with("local3.warning|deepsentry|")),
        "{:?}",
        received.first()
    );
}

#[test]
fn a_unix_socket_like_dev_log_is_written_to() {
    let s = Scratch::new();
    let daemon = Rsyslog::start(s.dir.path(), free_port(), free_port());
    let socket = s.dir.path().join("rsyslog/log.sock");
    assert!(wait_until(Duration::from_secs(5), || socket.exists()));
    let input: Vec<String> = (0..20).map(|i| format!("unix line {i}")).collect();
    write_lines(&s.path("in.log"), &input, false);
    let config = replay_pipeline(
        &s,
        &format!(
            "    type: syslog\n    address: '{}'\n    encoding: text\n",
            socket.display()
        ),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(wait_until(Duration::from_secs(10), || daemon.lines().len()
        >= input.len()));
    assert_eq!(messages(&daemon.lines()), input);
    assert!(daemon.lines()[0].starts_with("user.alert|deepsentry|"));
}

#[test]
fn tcp_alerts_of_the_detector_carry_score_and_threshold() {
    let s = Scratch::new();
    let (udp, tcp) = (free_port(), free_port());
    let daemon = Rsyslog::start(s.dir.path(), udp, tcp);
    let config = detector_alerts_pipeline(
        &s,
        &format!("    type: syslog\n    mode: tcp\n    address: 127.0.0.1:{tcp}\n"),
    );
    let (code, stderr) = run_to_end(&config);
    assert_eq!(code, Some(0), "{stderr}");
    let flagged = logged_counter(&stderr, "anomalies").expect("the detector's counters") as usize;
    assert!(flagged > 0);
    let ok = wait_until(Duration::from_secs(10), || daemon.lines().len() >= flagged);
    let received = daemon.lines();
    assert!(ok, "{} of {flagged} alerts arrived", received.len());
    assert_eq!(received.len(), flagged, "each alert once");
    let shape = regex::Regex::new(
        r#"^user\.alert\|deepsentry\|anomaly\|\[deepsentry@32473 score="[0-9.]+" threshold="[0-9.]+" anomaly="true"[^|]*\]\|\[\d\d:\d\d:\d\d\] ANOMALY - score: "#,
    )
    .unwrap();
    for line in &received {
        assert!(shape.is_match(line), "{line}");
    }
}

#[test]
fn a_daemon_that_is_down_holds_the_events_until_it_is_up() {
    let s = Scratch::new();
    let (udp, tcp) = (free_port(), free_port());
    let input: Vec<String> = (0..50).map(|i| format!("held line {i}")).collect();
    write_lines(&s.path("in.log"), &input, false);
    let config = s.pipeline(
        "p.yml",
        &format!(
            "data_dir: {{dir}}/data\n\
             sources:\n  in:\n    type: file\n    include: ['{{dir}}/in.log']\n\
             sinks:\n  out:\n    type: syslog\n    inputs: [in]\n    mode: tcp\n    \
             address: 127.0.0.1:{tcp}\n    framing: newline\n    encoding: text\n    \
             reconnect_max_secs: 0.5\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let said = wait_until(Duration::from_secs(20), || {
        s.stderr().contains("cannot send to syslog")
    });
    assert!(said, "no log line about the missing daemon\n{}", s.stderr());
    std::thread::sleep(Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "the pipeline gave up");

    let daemon = Rsyslog::start(s.dir.path(), udp, tcp);
    let ok = wait_until(Duration::from_secs(20), || {
        daemon.lines().len() >= input.len()
    });
    stop(&s, &mut child);
    assert!(ok, "{}", s.stderr());
    assert_eq!(messages(&daemon.lines()), input);
    s.assert_logged("syslog reachable again");
    assert!(s.stderr().contains("send_errors="), "{}", s.stderr());
}

#[test]
fn a_message_larger_than_a_datagram_is_truncated_and_the_rest_flows() {
    let s = Scratch::new();
    let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  in:\n    type: stdin\n\
             sinks:\n  out:\n    type: syslog\n    inputs: [in]\n    mode: udp\n    \
             address: 127.0.0.1:{port}\n    encoding: text\n"
        ),
    );
    let mut child = s.start(&config, Stdio::piped(), Stdio::null());
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // `printf 'first\n%070000d\nnever\n' 0`
        write!(stdin, "first\n{}\nnever\n", "0".repeat(70_000)).unwrap();
    }
    let status = wait_exit(&s, &mut child, Duration::from_secs(30));
    assert!(status.success(), "{}", s.stderr());
    let mut datagrams = Vec::new();
    let mut buf = vec![0u8; 1 << 17];
    for _ in 0..3 {
        let n = listener.recv(&mut buf).expect("a datagram");
        datagrams.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(datagrams[0].ends_with(" first"), "{}", datagrams[0]);
    assert_eq!(datagrams[1].len(), 65_507, "cut to what UDP carries");
    assert!(datagrams[1].ends_with("0000"));
    assert!(datagrams[2].ends_with(" never"), "{}", datagrams[2]);
    let stderr = s.stderr();
    assert_eq!(
        component_counter(&stderr, "out", "lines_modified{reason=truncated}"),
        Some(1),
        "{stderr}"
    );
    assert!(stderr.contains("were truncated"), "{stderr}");
}
