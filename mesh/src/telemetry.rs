use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber: text by default, JSON with `json`. The filter
/// comes from `RUST_LOG`, falling back to `default_level`.
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests running two services in one process) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
