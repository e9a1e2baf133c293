//! The two cookies authchat sets, built in one place so that setting and clearing a cookie
//! always carry the same attributes (a removal without `Secure` or with another path is a
//! different cookie to the browser).

use std::time::Duration;

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::HttpRequest;

/// A cookie authchat sets, with its fixed attributes. Both are HttpOnly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCookie {
    /// JWT mode: the rotating refresh token. SameSite=Strict, sent only to `/api/token/…`.
    Refresh,
    /// Session mode: the session. SameSite=Lax (so a link into the app keeps the user signed
    /// in), path `/`.
    Session,
}

impl AuthCookie {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Refresh => "authchat_refresh",
            Self::Session => "authchat_session",
        }
    }

    const fn path(self) -> &'static str {
        match self {
            Self::Refresh => "/api/token",
            Self::Session => "/",
        }
    }

    const fn same_site(self) -> SameSite {
        match self {
            Self::Refresh => SameSite::Strict,
            Self::Session => SameSite::Lax,
        }
    }

    /// The cookie holding `value` for `max_age`; `secure` as `AppState::secure_cookies` says.
    pub fn set(self, value: String, max_age: Duration, secure: bool) -> Cookie<'static> {
        let mut cookie = self.build(value, secure);
        cookie.set_max_age(CookieDuration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)));
        cookie
    }

    /// The cookie that clears it: same name, path and attributes, empty and already expired.
    pub fn removal(self, secure: bool) -> Cookie<'static> {
        let mut cookie = self.build(String::new(), secure);
        cookie.make_removal();
        cookie
    }

    /// Its non-empty value in the request, if any.
    pub fn value_in(self, req: &HttpRequest) -> Option<String> {
        req.cookie(self.name()).map(|c| c.value().to_owned()).filter(|v| !v.is_empty())
    }

    fn build(self, value: String, secure: bool) -> Cookie<'static> {
        Cookie::build(self.name(), value)
            .http_only(true)
            .same_site(self.same_site())
            .path(self.path())
            .secure(secure)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_carries_the_attributes_of_the_cookie_it_clears() {
        for kind in [AuthCookie::Refresh, AuthCookie::Session] {
            for secure in [false, true] {
                let set = kind.set("v".into(), Duration::from_secs(60), secure);
                let removal = kind.removal(secure);
                assert_eq!(removal.value(), "");
                assert_eq!(removal.max_age(), Some(CookieDuration::ZERO));
                assert_eq!(
                    (removal.name(), removal.path(), removal.secure(), removal.http_only(), removal.same_site()),
                    (set.name(), set.path(), set.secure(), set.http_only(), set.same_site()),
                );
            }
        }
    }
}
