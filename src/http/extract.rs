//! Extractors for REST routes: a verified caller (in JWT mode by bearer token, in session mode
//! by the session cookie alone), and one that must hold the admin role.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};

use super::error::ApiError;
use crate::auth::authenticator::{Authenticator, Credential};
use crate::auth::{AuthError, Principal};
use crate::config::AuthMode;
use crate::state::AppState;

/// The caller, proven by `Authorization: Bearer <jwt>` (valid and not revoked), or in session
/// mode by the session cookie alone.
pub struct Authenticated(pub Principal);

/// A caller whose token has `admin` in its `roles` claim: 401 without a token, 403 without the role.
pub struct Admin(pub Principal);

/// The token of `Authorization: Bearer <token>`: `None` without the header, an error for any
/// other scheme. The one parser of that header, for REST and for the upgrade.
pub fn bearer_token(req: &HttpRequest) -> Result<Option<&str>, AuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    match value.to_str().unwrap_or_default().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(AuthError::InvalidToken("Authorization must use the Bearer scheme")),
    }
}

async fn authenticate(
    auth: web::Data<Authenticator>,
    presented: Result<String, ApiError>,
) -> Result<Principal, ApiError> {
    let value = presented?;
    let credential = match auth.mode() {
        AuthMode::Session => Credential::SessionCookie(&value),
        AuthMode::Jwt => Credential::Token(&value),
    };
    Ok(auth.authenticate(credential).await?)
}

/// In session mode only the session cookie authenticates, as at the upgrade (a bearer token
/// is not looked at), and a state-changing request with it must not come from a foreign page.
/// In JWT mode only the bearer token does.
fn presented(req: &HttpRequest, mode: AuthMode) -> Result<String, ApiError> {
    match mode {
        AuthMode::Session => {
            let secret = super::session::session_secret(req).ok_or(AuthError::MissingCredentials)?;
            let state = req.app_data::<web::Data<AppState>>().expect("AppState is registered");
            super::session::refuse_cross_site(req, &state.allowed_origins)?;
            Ok(secret)
        }
        AuthMode::Jwt => Ok(bearer_token(req)?.ok_or(AuthError::MissingCredentials)?.to_owned()),
    }
}

/// Everything the check needs, taken from the request up front so the future owns it.
fn authenticate_request(req: &HttpRequest) -> impl Future<Output = Result<Principal, ApiError>> + 'static {
    let auth = req.app_data::<web::Data<Authenticator>>().expect("the Authenticator is registered").clone();
    let presented = presented(req, auth.mode());
    authenticate(auth, presented)
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let check = authenticate_request(req);
        Box::pin(async move { check.await.map(Self) })
    }
}

impl Authenticated {
    /// For handlers that look for another credential first.
    pub async fn from_request_async(req: &HttpRequest) -> Result<Self, ApiError> {
        authenticate_request(req).await.map(Self)
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let check = authenticate_request(req);
        Box::pin(async move {
            let principal = check.await?;
            if principal.is_admin() {
                Ok(Self(principal))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}
