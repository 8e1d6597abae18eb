//! A generator of realistic HDFS DataNode/NameNode log lines, grouped in per-block sessions.
//!
//! Lines have the shape of Hadoop 0.18's HDFS log (`081109 203615 148 INFO
//! dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660
//! terminating`). Each block follows the life a real block follows (received by a 3-node write
//! pipeline, allocated, acknowledged, stored, served, verified, deleted), and several blocks
//! interleave as on a real cluster. A fraction of sessions carries an injected fault: an error
//! line, an exception, a session that stops after allocation, or phases out of order.
//!
//! It is deterministic for a seed, so tests and benchmarks use it as their fixture.

use std::collections::VecDeque;

use deepsentry_core::rng::SplitMix64;

/// What went wrong in a faulty session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A delete of a block the DataNode does not know (`Unexpected error trying to delete`).
    DeleteError,
    /// The write pipeline broke (`Exception writing block ... to mirror`), block incomplete.
    MirrorWriteFailed,
    /// Serving the block to a reader failed (`Got exception while serving`).
    ServeFailed,
    /// A PacketResponder was interrupted (`InterruptedIOException`).
    ResponderInterrupted,
    /// The block was allocated and never written: the session just stops.
    NeverWritten,
    /// The block was deleted before it was stored: phases out of order.
    OutOfOrder,
}

const FAULTS: [Fault; 6] = [
    Fault::DeleteError,
    Fault::MirrorWriteFailed,
    Fault::ServeFailed,
    Fault::ResponderInterrupted,
    Fault::NeverWritten,
    Fault::OutOfOrder,
];

/// One generated line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedLine {
    /// The full log line, without newline.
    pub text: String,
    /// The session's block id (`blk_-123...`).
    pub block: String,
    /// The fault injected into this line's session, if any.
    pub session_fault: Option<Fault>,
    /// Whether this very line is the injected error (false for faults that are an absence).
    pub is_fault_line: bool,
}

#[derive(Debug, Clone, Copy)]
enum Pid {
    Worker,
    NameNode,
    Scanner,
    Dataset,
}

#[derive(Debug)]
struct Step {
    pid: Pid,
    level: &'static str,
    component: &'static str,
    body: String,
    fault_line: bool,
}

#[derive(Debug)]
struct Session {
    block: String,
    fault: Option<Fault>,
    steps: VecDeque<Step>,
}

/// Generates interleaved HDFS block sessions; see the module docs.
#[derive(Debug)]
pub struct HdfsGenerator {
    rng: SplitMix64,
    fault_rate: f64,
    active: Vec<Session>,
    concurrency: usize,
    /// Simulated clock (Unix seconds), starting where the HDFS_v1 log starts.
    clock: i64,
    worker_thread: u64,
}

fn step(pid: Pid, level: &'static str, component: &'static str, body: String) -> Step {
    Step {
        pid,
        level,
        component,
        body,
        fault_line: false,
    }
}

impl HdfsGenerator {
    /// A generator with `concurrency` blocks in flight at once and `fault_rate` (0..=1) of
    /// sessions carrying a fault.
    pub fn new(seed: u64, fault_rate: f64, concurrency: usize) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            fault_rate: fault_rate.clamp(0.0, 1.0),
            active: Vec::new(),
            concurrency: concurrency.max(1),
            // 2008-11-09 20:35:18 UTC
            clock: 1_226_262_918,
            worker_thread: 140,
        }
    }

    fn datanode(&mut self) -> String {
        let subnet = if self.rng.chance(0.5) { 250 } else { 251 };
        format!(
            "10.{subnet}.{}.{}",
            self.rng.below(250) + 1,
            self.rng.below(250) + 1
        )
    }

    fn new_session(&mut self) -> Session {
        let id = self.rng.next_u64() as i64;
        let block = format!("blk_{id}");
        let nodes: Vec<String> = (0..3).map(|_| self.datanode()).collect();
        let size = if self.rng.chance(0.94) {
            67_108_864
        } else {
            self.rng.below(67_108_864) + 1
        };
        let task = self.rng.below(2000);
        let job = self.rng.below(40) + 1;
        let fault = if self.rng.chance(self.fault_rate) {
            Some(FAULTS[self.rng.below(FAULTS.len() as u64) as usize])
        } else {
            None
        };
        use Pid::*;
        let xceiver = "dfs.DataNode$DataXceiver";
        let responder = "dfs.DataNode$PacketResponder";
        let namesystem = "dfs.FSNamesystem";
        let mut receive = VecDeque::new();
        for i in 0..3 {
            let src = if i == 0 { &nodes[0] } else { &nodes[i - 1] };
            let port = 30_000 + self.rng.below(30_000);
            receive.push_back(step(
                Worker,
                "INFO",
                xceiver,
                format!(
                    "Receiving block {block} src: /{src}:{port} dest: /{}:50010",
                    nodes[i]
                ),
            ));
        }
        let allocate = step(
            NameNode,
            "INFO",
            namesystem,
            format!(
                "BLOCK* NameSystem.allocateBlock: /user/root/randtxt/_temporary/\
                 _task_200811092030_{job:04}_m_{task:06}_0/part-{task:05}. {block}"
            ),
        );
        let position = self.rng.below(4) as usize;
        receive.insert(position, allocate);

        let mut acked = Vec::new();
        for i in (0..3).rev() {
            acked.push(step(
                Worker,
                "INFO",
                responder,
                format!("PacketResponder {i} for block {block} terminating"),
            ));
            acked.push(step(
                Worker,
                "INFO",
                responder,
                format!(
                    "Received block {block} of size {size} from /{}",
                    nodes[i.max(1) - 1]
                ),
            ));
        }
        let stored: Vec<Step> = nodes
            .iter()
            .map(|node| {
                step(
                    NameNode,
                    "INFO",
                    namesystem,
                    format!(
                        "BLOCK* NameSystem.addStoredBlock: blockMap updated: {node}:50010 is \
                         added to {block} size {size}"
                    ),
                )
            })
            .collect();
        let mut read = Vec::new();
        for _ in 0..self.rng.below(3) {
            let node = &nodes[self.rng.below(3) as usize];
            let client = self.datanode();
            read.push(step(
                Worker,
                "INFO",
                xceiver,
                format!("{node}:50010 Served block {block} to /{client}"),
            ));
        }
        if self.rng.chance(0.3) {
            read.push(step(
                Scanner,
                "INFO",
                "dfs.DataBlockScanner",
                format!("Verification succeeded for {block}"),
            ));
        }
        let mut delete: Vec<Step> = nodes
            .iter()
            .map(|node| {
                step(
                    NameNode,
                    "INFO",
                    namesystem,
                    format!(
                        "BLOCK* NameSystem.delete: {block} is added to invalidSet of {node}:50010"
                    ),
                )
            })
            .collect();
        for _ in &nodes {
            let subdir = self.rng.below(64);
            delete.push(step(
                Dataset,
                "INFO",
                "dfs.FSDataset",
                format!("Deleting block {block} file /mnt/hadoop/dfs/data/current/subdir{subdir}/{block}"),
            ));
        }

        let mut steps: VecDeque<Step> = receive;
        match fault {
            None => {
                steps.extend(acked);
                steps.extend(stored);
                steps.extend(read);
                steps.extend(delete);
            }
            Some(Fault::DeleteError) => {
                steps.extend(acked);
                steps.extend(stored);
                steps.extend(read);
                delete.pop();
                delete.push(Step {
                    fault_line: true,
                    ..step(
                        Dataset,
                        "WARN",
                        "dfs.FSDataset",
                        format!(
                            "Unexpected error trying to delete block {block}. BlockInfo not \
                             found in volumeMap."
                        ),
                    )
                });
                steps.extend(delete);
            }
            Some(Fault::MirrorWriteFailed) => {
                steps.push_back(Step {
                    fault_line: true,
                    ..step(
                        Worker,
                        "INFO",
                        "dfs.DataNode$BlockReceiver",
                        format!(
                            "Exception writing block {block} to mirror {}:50010",
                            nodes[1]
                        ),
                    )
                });
                steps.push_back(Step {
                    fault_line: true,
                    ..step(
                        Worker,
                        "INFO",
                        xceiver,
                        format!(
                            "writeBlock {block} received exception java.io.IOException: \
                             Connection reset by peer"
                        ),
                    )
                });
                steps.extend(acked.into_iter().take(2));
            }
            Some(Fault::ServeFailed) => {
                steps.extend(acked);
                steps.extend(stored);
                let client = self.datanode();
                steps.push_back(Step {
                    fault_line: true,
                    ..step(
                        Worker,
                        "WARN",
                        xceiver,
                        format!(
                            "{}:50010:Got exception while serving {block} to /{client}:",
                            nodes[0]
                        ),
                    )
                });
                steps.extend(delete);
            }
            Some(Fault::ResponderInterrupted) => {
                steps.extend(acked.into_iter().take(3));
                steps.push_back(Step {
                    fault_line: true,
                    ..step(
                        Worker,
                        "INFO",
                        responder,
                        format!(
                            "PacketResponder {block} 1 Exception \
                             java.io.InterruptedIOException: Interruped while waiting for IO \
                             on channel java.nio.channels.SocketChannel"
                        ),
                    )
                });
                steps.extend(stored);
                steps.extend(delete);
            }
            Some(Fault::NeverWritten) => {
                let keep = 2 + self.rng.below(2) as usize;
                steps.truncate(keep);
            }
            Some(Fault::OutOfOrder) => {
                steps.extend(acked);
                let mut delete = delete.into_iter();
                if let Some(first) = delete.next() {
                    steps.push_back(Step {
                        fault_line: true,
                        ..first
                    });
                }
                steps.extend(stored);
                steps.extend(delete);
            }
        }
        Session {
            block,
            fault,
            steps,
        }
    }

    /// The next line, with the simulated clock.
    pub fn next_line(&mut self) -> GeneratedLine {
        if self.rng.below(3) == 0 {
            self.clock += 1;
        }
        let clock = self.clock;
        self.next_line_at(clock)
    }

    /// The next line, stamped with `unix_secs` (UTC).
    pub fn next_line_at(&mut self, unix_secs: i64) -> GeneratedLine {
        while self.active.len() < self.concurrency {
            let session = self.new_session();
            self.active.push(session);
        }
        let index = self.rng.below(self.active.len() as u64) as usize;
        let step = self.active[index]
            .steps
            .pop_front()
            .expect("sessions are never left empty");
        let (block, fault) = (self.active[index].block.clone(), self.active[index].fault);
        if self.active[index].steps.is_empty() {
            self.active.swap_remove(index);
        }
        let pid = match step.pid {
            Pid::Worker => {
                self.worker_thread += self.rng.below(3);
                self.worker_thread
            }
            Pid::NameNode => 26 + self.rng.below(10),
            Pid::Scanner => 13,
            Pid::Dataset => 18 + self.rng.below(2),
        };
        let time = chrono::DateTime::from_timestamp(unix_secs, 0)
            .unwrap_or_default()
            .format("%y%m%d %H%M%S");
        GeneratedLine {
            text: format!(
                "{time} {pid} {} {}: {}",
                step.level, step.component, step.body
            ),
            block,
            session_fault: fault,
            is_fault_line: step.fault_line,
        }
    }
}

impl Iterator for HdfsGenerator {
    type Item = GeneratedLine;

    fn next(&mut self) -> Option<GeneratedLine> {
        Some(self.next_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn deterministic_for_a_seed() {
        let a: Vec<_> = HdfsGenerator::new(7, 0.1, 4).take(200).collect();
        let b: Vec<_> = HdfsGenerator::new(7, 0.1, 4).take(200).collect();
        assert_eq!(a, b);
        let c: Vec<_> = HdfsGenerator::new(8, 0.1, 4).take(200).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn lines_have_the_hdfs_shape() {
        for line in HdfsGenerator::new(1, 0.2, 8).take(500) {
            let parts: Vec<&str> = line.text.splitn(6, ' ').collect();
            assert_eq!(parts[0].len(), 6, "{}", line.text);
            assert_eq!(parts[1].len(), 6, "{}", line.text);
            assert!(parts[2].parse::<u32>().is_ok(), "{}", line.text);
            assert!(["INFO", "WARN"].contains(&parts[3]), "{}", line.text);
            assert!(parts[4].starts_with("dfs.") && parts[4].ends_with(':'));
            assert!(line.text.contains(&line.block), "{}", line.text);
        }
    }

    #[test]
    fn normal_sessions_complete_and_faults_are_injected() {
        let mut sessions: HashMap<String, Vec<GeneratedLine>> = HashMap::new();
        for line in HdfsGenerator::new(3, 0.3, 8).take(20_000) {
            sessions.entry(line.block.clone()).or_default().push(line);
        }
        let faulty = sessions
            .values()
            .filter(|s| s[0].session_fault.is_some())
            .count();
        assert!(faulty > 50, "{faulty} faulty sessions");
        assert!(sessions
            .values()
            .flatten()
            .any(|l| l.is_fault_line && l.text.contains("Unexpected error")));
        // A finished normal session starts with a receive or allocate and ends with deletes.
        let finished_normal = sessions
            .values()
            .filter(|s| s[0].session_fault.is_none() && s.len() >= 13)
            .count();
        assert!(finished_normal > 100);
        for s in sessions.values().filter(|s| s[0].session_fault.is_none()) {
            assert!(s.iter().all(|l| !l.is_fault_line));
        }
    }
}
