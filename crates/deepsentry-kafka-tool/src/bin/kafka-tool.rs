//! `kafka-tool`: the Kafka side of the benchmarks. Creates topics, fills them with log lines,
//! copies one topic to another with plain rdkafka (the baseline), and times how fast a topic
//! fills up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use deepsentry_kafka_tool as tools;

/// Kafka helpers for DeepSentry's benchmarks.
#[derive(Debug, Parser)]
struct Cli {
    /// The broker, `host:port`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a topic.
    CreateTopic {
        topic: String,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
    },
    /// Produces `count` log lines keyed by one of `sessions` session ids.
    Produce {
        topic: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
    },
    /// Copies `count` messages from one topic to another with a plain consumer and producer.
    Copy {
        from: String,
        to: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "kafka-tool-copy")]
        group: String,
    },
    /// Waits until a topic holds `count` messages; prints the seconds from its first message
    /// to its `count`-th.
    Wait {
        topic: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CreateTopic { topic, partitions } => {
            tools::create_topic(&cli.bootstrap, &topic, partitions)?
        }
        Command::Produce {
            topic,
            count,
            sessions,
        } => {
            let started = Instant::now();
            let messages = (0..count).map(|i| {
                let session = format!("blk_{}", i % sessions.max(1));
                tools::Outgoing {
                    payload: format!(
                        "081109 203615 {i} INFO dfs.DataNode$PacketResponder: \
                         Received block {session} of size 67108864 from /10.250.19.102"
                    ),
                    key: Some(session),
                    headers: Vec::new(),
                }
            });
            let produced = tools::produce(&cli.bootstrap, &topic, messages)?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "produced {produced} messages in {secs:.2} s ({:.0}/s)",
                produced as f64 / secs
            );
        }
        Command::Copy {
            from,
            to,
            count,
            group,
        } => {
            let mut options = BTreeMap::new();
            // The same group settings as the benchmark's pipeline.
            options.insert("session.timeout.ms".to_owned(), "6000".to_owned());
            tools::copy_topic(&cli.bootstrap, &from, &to, &group, count, &options)?
        }
        Command::Wait {
            topic,
            count,
            timeout_secs,
        } => {
            let secs = tools::wait_for_count(
                &cli.bootstrap,
                &topic,
                count,
                Duration::from_secs(timeout_secs),
            )?;
            println!("{secs:.3}");
        }
    }
    Ok(())
}
