//! Citadel's own metrics, under Istio 1.x's names where it had one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    pub namespace: String,
    pub secret: String,
}

#[derive(Clone, Default)]
pub struct Metrics {
    pub csr_count: Counter,
    pub authentication_failures: Counter,
    pub authorization_failures: Counter,
    pub csr_parsing_errors: Counter,
    pub csr_sign_errors: Counter,
    pub issued: Counter,
    pub secrets_created: Counter,
    pub secrets_deleted: Counter,
    pub secret_errors: Counter,
    pub root_expiry: Gauge,
    pub workload_expiry: Family<SecretLabels, Gauge>,
    pub ledger_written: Counter,
    pub ledger_dropped: Counter,
    pub ledger_errors: Counter,
}

impl Metrics {
    pub fn new(registry: &mesh::metrics::Metrics) -> Metrics {
        let m = Metrics::default();
        let r = registry;
        r.register(
            "citadel_server_csr_count",
            "CSRs received by the CreateCertificate service.",
            m.csr_count.clone(),
        );
        r.register(
            "citadel_server_authentication_failure_count",
            "CSRs refused because the caller could not be authenticated.",
            m.authentication_failures.clone(),
        );
        r.register(
            "citadel_server_authorization_failure_count",
            "CSRs refused because they asked for an identity other than the caller's.",
            m.authorization_failures.clone(),
        );
        r.register(
            "citadel_server_csr_parsing_err_count",
            "CSRs that could not be read, had a bad signature or a weak key.",
            m.csr_parsing_errors.clone(),
        );
        r.register(
            "citadel_server_csr_sign_err_count",
            "CSRs whose signing failed.",
            m.csr_sign_errors.clone(),
        );
        r.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued by the CreateCertificate service.",
            m.issued.clone(),
        );
        r.register(
            "citadel_secret_controller_svc_acc_created_cert_count",
            "istio.<sa> Secrets written with a new key and certificate.",
            m.secrets_created.clone(),
        );
        r.register(
            "citadel_secret_controller_svc_acc_deleted_cert_count",
            "istio.<sa> Secrets removed with their ServiceAccount.",
            m.secrets_deleted.clone(),
        );
        r.register(
            "citadel_secret_controller_csr_err_count",
            "Secrets that could not be issued, written or removed.",
            m.secret_errors.clone(),
        );
        r.register(
            "citadel_server_root_cert_expiry_timestamp",
            "When the root that signs now expires (Unix seconds).",
            m.root_expiry.clone(),
        );
        r.register(
            "citadel_workload_cert_expiry_timestamp",
            "When each istio.<sa> Secret's certificate expires (Unix seconds).",
            m.workload_expiry.clone(),
        );
        r.register(
            "citadel_ledger_written",
            "Issued certificates recorded in the ledger.",
            m.ledger_written.clone(),
        );
        r.register(
            "citadel_ledger_dropped",
            "Ledger entries dropped because the ledger's queue was full.",
            m.ledger_dropped.clone(),
        );
        r.register(
            "citadel_ledger_write_errors",
            "Failed attempts to write ledger entries (retried).",
            m.ledger_errors.clone(),
        );
        m
    }
}
