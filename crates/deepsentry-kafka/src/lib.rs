//! What DeepSentry's Kafka source and sink share: building a librdkafka client configuration
//! from a component's settings, and sending librdkafka's own logs and errors to `tracing`
//! under the component's id.
//!
//! [`tools`] holds plain rdkafka producers and consumers used by the integration tests and the
//! benchmark (`kafka-tool`), so that they talk to the broker with the same client library as
//! the pipeline and need no Kafka command-line tools.

use std::collections::BTreeMap;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Builds the client configuration of a component: `bootstrap.servers`, then the component's
/// own `defaults`, then the user's `librdkafka_options`, which win over both.
pub fn client_config(
    bootstrap_servers: &str,
    defaults: &[(&str, &str)],
    librdkafka_options: &BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in librdkafka_options {
        config.set(key, value);
    }
    // librdkafka's own log lines go through `ClientContext::log`; debug contexts stay off
    // unless the user enables them with the `debug` option.
    config.set_log_level(RDKafkaLogLevel::Info);
    config
}

/// Routes librdkafka's log lines and client errors to `tracing`, tagged with the component.
#[derive(Debug, Clone)]
pub struct KafkaLog {
    component: String,
    bootstrap_servers: String,
}

impl KafkaLog {
    /// A logger for the component `component` talking to `bootstrap_servers`.
    pub fn new(component: &str, bootstrap_servers: &str) -> Self {
        Self {
            component: component.to_owned(),
            bootstrap_servers: bootstrap_servers.to_owned(),
        }
    }

    /// Handles one librdkafka log line (`ClientContext::log`).
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let component = self.component.as_str();
        match level {
            // Connection failures arrive here *and* as client errors; the error path below
            // says it once, in words an operator can act on.
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::debug!(%component, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(%component, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::debug!(%component, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::trace!(%component, facility, "librdkafka: {message}")
            }
        }
    }

    /// Handles a client-level error (`ClientContext::error`). librdkafka retries on its own;
    /// these lines say why nothing is flowing.
    pub fn error(&self, error: KafkaError, reason: &str) {
        let component = self.component.as_str();
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
                tracing::warn!(
                    %component,
                    bootstrap_servers = %self.bootstrap_servers,
                    "cannot reach Kafka ({reason}); retrying until it is up"
                )
            }
            _ => tracing::error!(%component, "Kafka client error: {error} ({reason})"),
        }
    }
}

/// Implements rdkafka's `ClientContext` for a context type holding a [`KafkaLog`] in the
/// field `log`, so the source's and the sink's contexts log the same way.
#[macro_export]
macro_rules! impl_client_context {
    ($context:ty) => {
        impl rdkafka::ClientContext for $context {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
                self.log.log(level, fac, message);
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                self.log.error(error, reason);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_options_win_over_defaults() {
        let mut options = BTreeMap::new();
        options.insert("acks".to_owned(), "1".to_owned());
        let config = client_config("a:9092", &[("acks", "all"), ("linger.ms", "5")], &options);
        assert_eq!(config.get("bootstrap.servers"), Some("a:9092"));
        assert_eq!(config.get("acks"), Some("1"));
        assert_eq!(config.get("linger.ms"), Some("5"));
    }

    /// The client library is built with TLS and SASL: librdkafka refuses, when the client is
    /// created, a protocol or mechanism it was built without ("No provider for SASL
    /// mechanism", "Unsupported value ... SSL"). Creating a client connects to nothing.
    #[test]
    fn tls_and_sasl_mechanisms_are_built_in() {
        use rdkafka::producer::BaseProducer;
        for (protocol, mechanism) in [
            ("SSL", None),
            ("SASL_SSL", Some("PLAIN")),
            ("SASL_SSL", Some("SCRAM-SHA-256")),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
        ] {
            let mut options = BTreeMap::new();
            options.insert("security.protocol".to_owned(), protocol.to_owned());
            if let Some(mechanism) = mechanism {
                options.insert("sasl.mechanism".to_owned(), mechanism.to_owned());
                options.insert("sasl.username".to_owned(), "user".to_owned());
                options.insert("sasl.password".to_owned(), "secret".to_owned());
            }
            let created = client_config("127.0.0.1:1", &[], &options).create::<BaseProducer>();
            assert!(
                created.is_ok(),
                "{protocol} {mechanism:?}: {:?}",
                created.err()
            );
        }
    }
}
