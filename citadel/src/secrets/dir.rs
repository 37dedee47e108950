//! Local mode's Secrets and ServiceAccounts.
