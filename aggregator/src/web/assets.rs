//! The pages' scripts and stylesheets (`aggregator/assets/`), compiled into the binary and
//! served at `GET /assets/{name}`.
//!
//! `base.css` is the look every page shares; `common.js` holds the helpers the page scripts
//! share and loads before them; each page has its own `.css` and `.js`.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Every asset by name.
pub(super) const ASSETS: [(&str, &str); 26] = [
    ("base.css", include_str!("../../assets/base.css")),
    ("common.js", include_str!("../../assets/common.js")),
    ("dashboard.js", include_str!("../../assets/dashboard.js")),
    ("alarms.css", include_str!("../../assets/alarms.css")),
    ("alarms.js", include_str!("../../assets/alarms.js")),
    ("antivirus.css", include_str!("../../assets/antivirus.css")),
    ("antivirus.js", include_str!("../../assets/antivirus.js")),
    ("capacity.css", include_str!("../../assets/capacity.css")),
    ("capacity.js", include_str!("../../assets/capacity.js")),
    ("case.css", include_str!("../../assets/case.css")),
    ("case.js", include_str!("../../assets/case.js")),
    ("hardware.css", include_str!("../../assets/hardware.css")),
    ("reclaim.css", include_str!("../../assets/reclaim.css")),
    ("reclaim.js", include_str!("../../assets/reclaim.js")),
    (
        "applications.css",
        include_str!("../../assets/applications.css"),
    ),
    (
        "applications.js",
        include_str!("../../assets/applications.js"),
    ),
    (
        "application.js",
        include_str!("../../assets/application.js"),
    ),
    ("register.css", include_str!("../../assets/register.css")),
    ("register.js", include_str!("../../assets/register.js")),
    ("session.js", include_str!("../../assets/session.js")),
    ("login.css", include_str!("../../assets/login.css")),
    ("login.js", include_str!("../../assets/login.js")),
    ("audit.css", include_str!("../../assets/audit.css")),
    ("audit.js", include_str!("../../assets/audit.js")),
    ("users.js", include_str!("../../assets/users.js")),
    ("account.js", include_str!("../../assets/account.js")),
];

/// The media type by the name's extension.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _)| *n == name) {
        Some(&(name, body)) => (
            [
                (CONTENT_TYPE, content_type(name)),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // short: a new build's assets reach browsers within minutes
                (CACHE_CONTROL, "public, max-age=300"),
            ],
            body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [
                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (CACHE_CONTROL, "no-cache"),
            ],
            "没有这个静态资源",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_known_type() {
        for (name, body) in ASSETS {
            assert_ne!(content_type(name), "application/octet-stream", "{name}");
            assert!(!body.trim().is_empty(), "{name}");
        }
    }

    #[test]
    fn scripts_set_text_only() {
        for (name, body) in ASSETS.iter().filter(|(n, _)| n.ends_with(".js")) {
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "eval("] {
                assert!(!body.contains(banned), "{name} uses {banned}");
            }
        }
    }

    #[test]
    fn the_shared_look_is_in_one_stylesheet() {
        let base = ASSETS.iter().find(|(n, _)| *n == "base.css").unwrap().1;
        assert!(base.contains(":root") && base.contains(".gauge"));
        // the register page's own stylesheet is the only other one with the variables
        let with_root: Vec<_> = ASSETS
            .iter()
            .filter(|(n, b)| n.ends_with(".css") && b.contains(":root"))
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(with_root, ["base.css", "register.css"]);
    }
}
