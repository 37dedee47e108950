//! Citadel's Kubernetes side against a scripted API server.
//!
//! No kube-apiserver can run here, so each client is built over kube-rs's
//! `tower_test` seam and a task answers the way the API server does: LIST
//! with recorded objects (`tests/fixtures/kubernetes/*.json`, shaped like
//! `kubectl get -o json` output from a cluster running Bookinfo), WATCH with
//! a stream of events the test writes into, Secrets from a small in-memory
//! model of the API server's, and TokenReviews with recorded answers. Every
//! request is kept, so the tests check what was sent as well as what came
//! back.

#[path = "kubernetes/accounts.rs"]
mod accounts;
#[path = "kubernetes/fake.rs"]
mod fake;
#[path = "kubernetes/review.rs"]
mod review;
#[path = "kubernetes/secrets.rs"]
mod secrets;
#[path = "kubernetes/secrets_api.rs"]
mod secrets_api;
