use serde::Serialize;

/// The Istio kinds Trireme parses and validates, with the group/versions
/// Istio 1.4 served them under. Pilot acts on some of them; the rest are
/// validated, as Galley validated them, for whoever reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Sidecar,
    /// `authentication.istio.io/v1alpha1`: peer authentication of a namespace or its services.
    Policy,
    /// `authentication.istio.io/v1alpha1`, cluster-scoped: the mesh's default.
    MeshPolicy,
    AuthorizationPolicy,
    Gateway,
    EnvoyFilter,
    /// `rbac.istio.io/v1alpha1`, deprecated in Istio 1.4 like the three below.
    ServiceRole,
    ServiceRoleBinding,
    /// The namespaced predecessor of `ClusterRbacConfig`.
    RbacConfig,
    /// Cluster-scoped: turns `ServiceRole`s on, for the mesh or some of it.
    ClusterRbacConfig,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::Policy,
        Kind::MeshPolicy,
        Kind::AuthorizationPolicy,
        Kind::Gateway,
        Kind::EnvoyFilter,
        Kind::ServiceRole,
        Kind::ServiceRoleBinding,
        Kind::RbacConfig,
        Kind::ClusterRbacConfig,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Policy => "Policy",
            Kind::MeshPolicy => "MeshPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Gateway => "Gateway",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::ServiceRole => "ServiceRole",
            Kind::ServiceRoleBinding => "ServiceRoleBinding",
            Kind::RbacConfig => "RbacConfig",
            Kind::ClusterRbacConfig => "ClusterRbacConfig",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::Policy | Kind::MeshPolicy => "authentication.istio.io",
            Kind::AuthorizationPolicy => "security.istio.io",
            Kind::ServiceRole
            | Kind::ServiceRoleBinding
            | Kind::RbacConfig
            | Kind::ClusterRbacConfig => "rbac.istio.io",
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::Gateway
            | Kind::EnvoyFilter => "networking.istio.io",
        }
    }

    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            "networking.istio.io" => &["v1alpha3"],
            "security.istio.io" => &["v1beta1"],
            _ => &["v1alpha1"],
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::MeshPolicy | Kind::ClusterRbacConfig)
    }

    pub(super) fn parse(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/')?;
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.group() == group && k.versions().contains(&version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_api_version() {
        for kind in Kind::ALL {
            let api_version = format!("{}/{}", kind.group(), kind.versions()[0]);
            assert_eq!(Kind::parse(&api_version, kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("networking.istio.io/v1beta1", "Gateway"), None);
        assert_eq!(Kind::parse("rbac.istio.io/v1alpha1", "Gateway"), None);
    }
}
