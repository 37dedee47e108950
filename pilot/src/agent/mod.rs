//! pilot-agent
