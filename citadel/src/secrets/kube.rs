//! Secrets and ServiceAccounts on Kubernetes, through kube-rs.
