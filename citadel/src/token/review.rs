//! Tokens the API server vouches for: a TokenReview asks it whether a token
//! is valid and whose it is. Used where Citadel cannot read the cluster's
//! signing keys, and the only way to honour revocation (a deleted
//! ServiceAccount or Pod) before a token expires.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

use super::TokenError;
use crate::identity::Identity;

pub struct TokenReviewer {
    client: Client,
    audience: String,
}

impl TokenReviewer {
    /// `audience` empty accepts tokens for the API server's own audiences
    /// (legacy Secret-based tokens carry no other).
    pub fn new(client: Client, audience: impl Into<String>) -> TokenReviewer {
        TokenReviewer {
            client,
            audience: audience.into(),
        }
    }

    pub async fn review(&self, token: &str) -> Result<Identity, TokenError> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: (!self.audience.is_empty()).then(|| vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| TokenError::Unavailable(format!("TokenReview: {}", api_error(&e))))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty());
            return Err(TokenError::Invalid(
                why.unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        // An API server that ignores spec.audiences (older than 1.13, or
        // with audiences left unconfigured) says so by echoing none back;
        // one that names others has authenticated the token for someone else.
        if let Some(audiences) = &status.audiences
            && !self.audience.is_empty()
            && !audiences.contains(&self.audience)
        {
            return Err(TokenError::Invalid(format!(
                "token is for audiences {audiences:?}, not {:?}",
                self.audience
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        Identity::from_token_subject(&username).ok_or(TokenError::Subject(username))
    }
}

fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!("{} (HTTP {})", status.message, status.code),
        other => other.to_string(),
    }
}
