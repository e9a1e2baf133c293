//! Extractors for REST routes: a verified bearer token, and one that must hold the admin role.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};

use super::error::ApiError;
use crate::auth::revocation::check_not_revoked;
use crate::auth::{AuthError, Principal};
use crate::state::AppState;

/// The caller, proven by `Authorization: Bearer <jwt>` (valid and not revoked).
pub struct Authenticated(pub Principal);

/// A caller whose token has `admin` in its `roles` claim: 401 without a token, 403 without the role.
pub struct Admin(pub Principal);

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or(AuthError::MissingCredentials)?;
    match value.to_str().unwrap_or_default().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim().to_owned()),
        _ => Err(AuthError::InvalidToken("Authorization must use the Bearer scheme").into()),
    }
}

async fn authenticate(state: web::Data<AppState>, token: Result<String, ApiError>) -> Result<Principal, ApiError> {
    let principal = state.tokens.verify(&token?)?;
    check_not_revoked(state.stores.revocations.as_ref(), &principal).await?;
    Ok(principal)
}

fn state_of(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>().expect("AppState is registered").clone()
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (state_of(req), bearer(req));
        Box::pin(async move { authenticate(state, token).await.map(Self) })
    }
}

impl Authenticated {
    /// For handlers that look for another credential first.
    pub async fn from_request_async(req: &HttpRequest) -> Result<Self, ApiError> {
        authenticate(state_of(req), bearer(req)).await.map(Self)
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (state, token) = (state_of(req), bearer(req));
        Box::pin(async move {
            let principal = authenticate(state, token).await?;
            if principal.is_admin() {
                Ok(Self(principal))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}
