//! `TokenReviewer` against recorded TokenReview answers.

use citadel::identity::Identity;
use citadel::token::TokenError;
use citadel::token::review::TokenReviewer;
use http::{Method, StatusCode};
use serde_json::json;

use crate::fake::{FakeApi, Reply, fixture, status};

fn reviewer(audience: &str, answer: Reply) -> (TokenReviewer, FakeApi) {
    let mut answer = Some(answer);
    let (client, api) = FakeApi::start(move |_| answer.take().expect("one TokenReview per test"));
    (TokenReviewer::new(client, audience), api)
}

fn review_answer(name: &str) -> Reply {
    Reply::Json(StatusCode::CREATED, fixture(name))
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjFqWmVHbGZ3In0.eyJhdWQiOlsiaXN0aW8tY2EiXSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6Ym9va2luZm8tcmF0aW5ncyJ9.c2lnbmF0dXJl";

#[tokio::test]
async fn a_service_account_token_names_its_identity() {
    let (reviewer, api) = reviewer("istio-ca", review_answer("tokenreview-authenticated.json"));
    assert_eq!(
        reviewer.review(TOKEN).await,
        Ok(Identity::new("default", "bookinfo-ratings"))
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].path, "/apis/authentication.k8s.io/v1/tokenreviews");
    let body = &seen[0].body;
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"]["token"], TOKEN);
    assert_eq!(body["spec"]["audiences"], json!(["istio-ca"]));
}

#[tokio::test]
async fn an_empty_audience_asks_for_none() {
    // The API server's own audience is all it can answer for.
    let (reviewer, api) = reviewer("", review_answer("tokenreview-other-audience.json"));
    assert_eq!(
        reviewer.review(TOKEN).await,
        Ok(Identity::new("default", "bookinfo-ratings"))
    );
    let spec = &api.seen()[0].body["spec"];
    assert_eq!(spec["token"], TOKEN);
    assert!(spec.get("audiences").is_none(), "{spec}");
}

#[tokio::test]
async fn an_unauthenticated_token_is_invalid_for_the_api_servers_reason() {
    let (reviewer, _api) = reviewer(
        "istio-ca",
        review_answer("tokenreview-unauthenticated.json"),
    );
    assert_eq!(
        reviewer.review(TOKEN).await,
        Err(TokenError::Invalid(
            "[invalid bearer token, service account token has been invalidated]".into()
        ))
    );
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let (reviewer, _api) = reviewer("istio-ca", review_answer("tokenreview-user.json"));
    assert_eq!(
        reviewer.review(TOKEN).await,
        Err(TokenError::Subject("oidc:jane@example.com".into()))
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (reviewer, _api) = reviewer("istio-ca", review_answer("tokenreview-other-audience.json"));
    match reviewer.review(TOKEN).await {
        Err(TokenError::Invalid(why)) => {
            assert!(why.contains("istio-ca"), "{why}");
            assert!(
                why.contains("https://kubernetes.default.svc.cluster.local"),
                "{why}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The token was never judged: the caller is told to retry (UNAVAILABLE),
/// not that its token is bad.
#[tokio::test]
async fn a_failed_review_is_unavailable() {
    let forbidden = status(
        403,
        "Forbidden",
        "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:istio-system:istio-citadel-service-account\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
    );
    let (reviewer, _api) = reviewer("istio-ca", Reply::Json(StatusCode::FORBIDDEN, forbidden));
    match reviewer.review(TOKEN).await {
        Err(TokenError::Unavailable(why)) => {
            assert!(why.starts_with("TokenReview: "), "{why}");
            assert!(
                why.contains("cannot create resource \"tokenreviews\""),
                "{why}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
