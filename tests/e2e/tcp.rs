//! TCP source as a server for concurrent clients and as a reconnecting client.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

fn connect(port: u16, s: &Scratch) -> TcpStream {
    let mut stream = None;
    let ok = wait_until(WAIT, || {
        stream = TcpStream::connect(("127.0.0.1", port)).ok();
        stream.is_some()
    });
    assert!(ok, "cannot connect to the tcp source\n{}", s.stderr());
    stream.unwrap()
}

#[test]
fn three_concurrent_clients_all_arrive_in_order() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  net:\n    type: tcp\n    address: 127.0.0.1:{port}\n\
             sinks:\n  out:\n    type: file\n    inputs: [net]\n    path: {{dir}}/out.log\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let streams: Vec<TcpStream> = (0..3).map(|_| connect(port, &s)).collect();
    let senders: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(client, mut stream)| {
            std::thread::spawn(move || {
                for i in 0..3000 {
                    writeln!(stream, "client {client} line {i:05}").unwrap();
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    wait_for_lines(&s, &s.path("out.log"), 9000, WAIT);
    stop(&s, &mut child);
    let output = read_lines(&s.path("out.log"));
    assert_eq!(output.len(), 9000);
    for client in 0..3 {
        let prefix = format!("client {client} ");
        let mine: Vec<_> = output.iter().filter(|l| l.starts_with(&prefix)).collect();
        let expected: Vec<_> = (0..3000).map(|i| format!("{prefix}line {i:05}")).collect();
        assert!(mine
            .iter()
            .map(|s| s.as_str())
            .eq(expected.iter().map(|s| s.as_str())));
    }
}

#[test]
fn client_mode_reconnects_until_the_peer_appears_and_after_it_leaves() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  net:\n    type: tcp\n    mode: client\n    address: 127.0.0.1:{port}\n    reconnect_max_secs: 0.2\n\
             sinks:\n  out:\n    type: file\n    inputs: [net]\n    path: {{dir}}/out.log\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    // Nothing listens yet: the source retries.
    let retried = wait_until(WAIT, || s.stderr().contains("cannot connect"));
    assert!(retried, "{}", s.stderr());
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for round in 0..2 {
        let (mut peer, _) = listener.accept().unwrap();
        for i in 0..500 {
            writeln!(peer, "round {round} line {i}").unwrap();
        }
        // Closing the connection makes the source reconnect for the next round.
    }
    wait_for_lines(&s, &s.path("out.log"), 1000, WAIT);
    stop(&s, &mut child);
    let output = read_lines(&s.path("out.log"));
    assert_eq!(output.len(), 1000);
    assert_eq!(output[999], "round 1 line 499");
}

#[test]
fn oversized_line_over_tcp_is_truncated_and_the_next_line_survives() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  net:\n    type: tcp\n    address: 127.0.0.1:{port}\n    max_line_bytes: 64\n\
             sinks:\n  out:\n    type: console\n    inputs: [net]\n    encoding: text\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::piped());
    let mut stream = connect(port, &s);
    stream.write_all(&vec![b'z'; 100_000]).unwrap();
    stream.write_all(b"\nafter\n").unwrap();
    drop(stream);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let mut second = String::new();
    stdout.read_line(&mut first).unwrap();
    stdout.read_line(&mut second).unwrap();
    assert_eq!(first.trim_end(), "z".repeat(64));
    assert_eq!(second.trim_end(), "after");
    stop(&s, &mut child);
}

/// A client that sends nothing is disconnected after `idle_timeout_secs`, freeing its slot for
/// the next client (here the only slot).
#[test]
fn a_silent_client_is_disconnected_and_frees_its_slot() {
    let s = Scratch::new();
    let port = free_port();
    let config = s.pipeline(
        "p.yml",
        &format!(
            "sources:\n  net:\n    type: tcp\n    address: 127.0.0.1:{port}\n    max_connections: 1\n    idle_timeout_secs: 1\n\
             sinks:\n  out:\n    type: file\n    inputs: [net]\n    path: {{dir}}/out.log\n"
        ),
    );
    let mut child = s.start(&config, Stdio::null(), Stdio::null());
    let silent = connect(port, &s);
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut &silent, &mut byte);
    assert!(
        matches!(read, Ok(0)),
        "the server closes an idle connection: {read:?}\n{}",
        s.stderr()
    );
    let mut talker = connect(port, &s);
    writeln!(talker, "after the silent one").unwrap();
    wait_for_lines(&s, &s.path("out.log"), 1, WAIT);
    stop(&s, &mut child);
    s.assert_logged("connections_closed{reason=idle}=1");
}
