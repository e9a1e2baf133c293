//! A configuration file layered over the embedded default, as `--config` or
//! `config/<env>.toml` is: loading and validating it must refuse, never panic.
//!
//! Input: TOML; after a line `#env` the remaining lines are `AUTHCHAT__…=value` environment
//! variables (the layer read last).
#![no_main]

use std::collections::HashMap;

use authchat::config::{LoadOptions, Settings};
use authchat::ws::session::SocketConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env) = text.split_once("\n#env\n").unwrap_or((text, ""));
    let env_vars: HashMap<String, String> =
        env.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    let options = LoadOptions { env_vars: Some(env_vars), overrides: vec![toml.to_owned()], ..LoadOptions::default() };
    match Settings::load(&options) {
        Ok(settings) => {
            // What start-up derives from a valid configuration before it touches files.
            let _ = SocketConfig::from_settings(&settings);
            let _ = settings.hs_secret();
            let _ = settings.node_id("boot");
            let _ = format!("{settings:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
