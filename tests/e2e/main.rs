//! End-to-end tests: the built `deepsentry` binary against real files, pipes and sockets.

mod common;

mod api;
mod cli;
mod crash;
mod detector;
mod faults;
mod file_source;
mod filter;
mod http_source;
mod inputs;
mod kafka;
mod live;
mod passthrough;
mod reload;
mod shutdown;
mod syslog;
mod syslog_source;
mod tcp;
mod webhook;
