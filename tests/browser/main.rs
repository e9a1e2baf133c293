//! End-to-end tests of the web UI: the real server in-process, driven through headless Chromium
//! (Debian's `chromium` and `chromium-driver`). Each test starts its own chromedriver and
//! browsers with fresh profiles, and fails (never skips) when they are not installed.

mod admin;
mod chat;
mod composer;
mod history;
mod keyboard;
mod pages;
mod phone;
mod private;
mod restart;
mod rooms;
mod sending;
mod signin;
mod signout;
#[path = "../support/mod.rs"]
mod support;
mod token;
mod webdriver;
