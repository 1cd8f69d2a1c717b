//! `--log-format` and `--log-level`, shared by every subcommand; the level is
//! checked when parsed, so a typo is a usage error rather than the default.

use clap::{Args, ValueEnum};

/// Logging, shared by every subcommand.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format: `text` for people, `json` for log collectors
    #[arg(long, env = "PRIVATIZE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Level of privatize's own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)
    #[arg(long, env = "PRIVATIZE_LOG", default_value = "info", global = true, value_parser = LogFilter::parse)]
    pub log_level: LogFilter,
}

/// A checked log filter: the `tracing` directives `--log-level` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    /// A bare level applies to privatize; everything else stays at `warn`, the AWS
    /// SDK (which warns about each credential, region or config source it tries
    /// and misses) at `error`, and the platform verifier (which logs each refused
    /// certificate the final error names anyway) off. Text with `=` or `,` is a
    /// whole filter.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        let directives = if text.contains('=') || text.contains(',') {
            text.to_string()
        } else if LEVELS.contains(&text.to_ascii_lowercase().as_str()) {
            // Targets match by prefix: `aws_sdk_` is every service crate.
            format!(
                "warn,rustls_platform_verifier=off,aws_config=error,aws_runtime=error,\
                 aws_sdk_=error,aws_smithy_=error,privatize={text}"
            )
        } else {
            return Err(format!(
                "expected a level ({}) or a filter such as `warn,privatize=debug`",
                LEVELS.join(", ")
            ));
        };
        tracing_subscriber::EnvFilter::builder()
            .parse(&directives)
            .map_err(|err| format!("not a log filter: {err}"))?;
        Ok(Self(directives))
    }

    /// The `tracing` directives.
    pub fn directives(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
