//! End-to-end: real pilot-discovery, real pilot-agent, real Envoy, real HTTP.

mod capture;
mod change;
mod citadel;
mod galley;
mod injector;
mod lifecycle;
mod mixer_api;
mod mtls;
mod policy;
mod report_api;
mod routing;
mod telemetry;
mod validation;
