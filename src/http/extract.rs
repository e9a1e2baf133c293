//! Extractors for REST routes: a verified caller (bearer token, or in session mode the session
//! cookie), and one that must hold the admin role.

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

/// In session mode the session cookie comes first; otherwise (and without one) the bearer token.
async fn authenticate(state: web::Data<AppState>, credential: Credential) -> Result<Principal, ApiError> {
    let principal = match credential {
        Credential::Session { secret, cross_site } => {
            if cross_site {
                return Err(ApiError::OriginNotAllowed);
            }
            state.sessions.authenticate(&secret).await?
        }
        Credential::Bearer(token) => state.tokens.verify(&token?)?,
    };
    check_not_revoked(state.stores.revocations.as_ref(), &principal).await?;
    Ok(principal)
}

/// What a REST request presented.
enum Credential {
    /// `cross_site`: a state-changing request from an Origin not on the allowlist (CSRF).
    Session {
        secret: String,
        cross_site: bool,
    },
    Bearer(Result<String, ApiError>),
}

fn credential(req: &HttpRequest, state: &AppState) -> Credential {
    if state.session_mode() {
        if let Some(secret) = super::session::session_secret(req) {
            let origin = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
            let cross_site = req.method() != actix_web::http::Method::GET
                && origin.is_some_and(|o| !state.allowed_origins.contains(o));
            return Credential::Session { secret, cross_site };
        }
    }
    Credential::Bearer(bearer(req))
}

fn state_of(req: &HttpRequest) -> web::Data<AppState> {
    req.app_data::<web::Data<AppState>>().expect("AppState is registered").clone()
}

/// Everything the check needs, taken from the request up front so the future owns it.
fn authenticate_request(req: &HttpRequest) -> impl Future<Output = Result<Principal, ApiError>> + 'static {
    let state = state_of(req);
    let credential = credential(req, &state);
    authenticate(state, credential)
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
