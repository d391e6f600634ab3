//! The pages: one base layout (`templates/base.html`: head, header with the product title, the
//! navigation, the connection indicator) and one template per page extending it, rendered with
//! one [`minijinja::Environment`] that autoescapes HTML. Scripts and styles are files under
//! `/assets/` (see `assets.rs`): a page carries no inline code, so its policy needs no
//! `unsafe-inline`.
//!
//! Every page handler answers through [`page`], which sets the security headers.

use super::authz::Action;
use super::session::Principal;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;
use std::sync::LazyLock;
use yunjian_aggregator_core::identity::Role;

/// Scripts, styles and data come from this server only, and nothing inline runs.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The headers of every page.
const HEADERS: [(HeaderName, &str); 5] = [
    (CACHE_CONTROL, "no-cache"),
    (CONTENT_SECURITY_POLICY, CSP),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "no-referrer"),
    (X_FRAME_OPTIONS, "DENY"),
];

/// The navigation, in order: label, link, page key, what the page shows (a link appears only
/// to those who may see it).
const NAV: [(&str, &str, &str, Action); 10] = [
    ("总览", "/", "dashboard", Action::ViewFleet),
    ("机柜", "/racks", "racks", Action::ViewHardware),
    ("容量", "/capacity", "capacity", Action::ViewCapacity),
    ("告警", "/alarms", "alarms", Action::ViewAlarms),
    ("登记", "/register", "register", Action::ViewRegister),
    ("杀毒软件", "/antivirus", "antivirus", Action::ViewAntivirus),
    (
        "资源申请",
        "/applications",
        "applications",
        Action::ViewApplications,
    ),
    ("降配回收", "/reclaim", "reclaim", Action::ViewReclaim),
    ("审计", "/audit", "audit", Action::ViewAudit),
    ("用户", "/users", "users", Action::ViewUsers),
];

/// One link of the navigation bar.
#[derive(Debug, Serialize)]
pub(super) struct NavItem {
    pub label: &'static str,
    pub href: &'static str,
    pub key: &'static str,
    /// Marked `aria-current="page"`.
    pub current: bool,
}

/// The navigation with the page `current` (a key of [`NAV`], or none of them) marked.
pub(super) fn nav(current: &str, role: Option<Role>) -> Vec<NavItem> {
    NAV.iter()
        .filter(|(_, _, _, action)| role.is_some() && action.allows(role))
        .map(|&(label, href, key, _)| NavItem {
            label,
            href,
            key,
            current: key == current,
        })
        .collect()
}

/// The templates, by name, compiled into the binary.
const TEMPLATES: [(&str, &str); 18] = [
    ("base.html", include_str!("../../templates/base.html")),
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    ("alarms.html", include_str!("../../templates/alarms.html")),
    (
        "antivirus.html",
        include_str!("../../templates/antivirus.html"),
    ),
    (
        "capacity.html",
        include_str!("../../templates/capacity.html"),
    ),
    ("case.html", include_str!("../../templates/case.html")),
    ("reclaim.html", include_str!("../../templates/reclaim.html")),
    (
        "applications.html",
        include_str!("../../templates/applications.html"),
    ),
    (
        "application.html",
        include_str!("../../templates/application.html"),
    ),
    (
        "register.html",
        include_str!("../../templates/register.html"),
    ),
    (
        "hardware.html",
        include_str!("../../templates/hardware.html"),
    ),
    ("racks.html", include_str!("../../templates/racks.html")),
    ("server.html", include_str!("../../templates/server.html")),
    ("login.html", include_str!("../../templates/login.html")),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("users.html", include_str!("../../templates/users.html")),
    ("account.html", include_str!("../../templates/account.html")),
    (
        "forbidden.html",
        include_str!("../../templates/forbidden.html"),
    ),
];

/// Built once; the tests render every template, so a syntax error fails them, not a request.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // a block tag's line ending goes with it: no blank lines where blocks are empty
    match SyntaxConfig::builder().trim_blocks(true).build() {
        Ok(syntax) => env.set_syntax(syntax),
        Err(e) => panic!("template syntax: {e}"),
    }
    // `.html` templates autoescape (minijinja's default for the extension); values are escaped
    // by `escape` below, which leaves `/` readable in links
    env.set_formatter(|out, state, value| {
        if matches!(state.auto_escape(), AutoEscape::Html)
            && !value.is_safe()
            && !value.is_undefined()
            && !value.is_none()
        {
            Ok(out.write_str(&escape(&value.to_string()))?)
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            panic!("template {name} does not compile: {e}");
        }
    }
    env
});

/// HTML-escape text for element content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the pages cite of the active profile, as `policy` in a template: its `title`, each
/// rule's citation in full (`cite.capacity`: `《徽州区政务云平台管理暂行办法》第十九条（…）`) and
/// short (`short.capacity`: `第十九条`), its form's name and its capacity line.
pub(super) fn policy(profile: &yunjian_aggregator_core::policy::Profile) -> Value {
    let own = format!("{} ", profile.name);
    let mut cite = std::collections::BTreeMap::new();
    let mut short = std::collections::BTreeMap::new();
    for (rule, text) in profile.clauses.all() {
        let clause = text.strip_prefix(&own).unwrap_or(text);
        cite.insert(rule, format!("《{}》{clause}", profile.title));
        let end = clause.find(['（', '(', '、', ',']).unwrap_or(clause.len());
        short.insert(rule, clause[..end].trim().to_string());
    }
    context! {
        name => profile.name.clone(),
        title => profile.title.clone(),
        cite => cite,
        short => short,
        form => profile.register.form.zh(),
        zones => profile.register.zones.join("、"),
        line_pct => profile.capacity.thresholds.warn_pct,
    }
}

/// Render `template` with `ctx`, the navigation the signed-in user may follow (`current`
/// marked), who they are and their session's CSRF token, into a page with the security headers.
pub(super) fn page(template: &str, current: &str, who: Option<&Principal>, ctx: Value) -> Response {
    let user = who.map(|p| {
        context! {
            name => p.user.name.clone(),
            display_name => p.user.display_name.clone(),
            role => p.role().as_str(),
            role_zh => p.role().zh(),
            unit => p.user.unit.clone(),
        }
    });
    let ctx = context! {
        nav => Value::from(Serde(nav(current, who.map(Principal::role)))),
        user => user,
        csrf => who.and_then(|p| p.csrf.clone()),
        ..ctx
    };
    match ENV.get_template(template).and_then(|t| t.render(ctx)) {
        Ok(html) => (HEADERS, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template, error = %e, "web: page template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                HEADERS,
                "页面生成失败，请稍后重试或联系运维人员",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::metrics::Metrics;
    use crate::web::{router, AppState};
    use axum::body::Body as HttpBody;
    use axum::http::header::CONTENT_TYPE;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::collections::BTreeSet;
    use std::sync::{Arc, RwLock};
    use tokio::sync::watch;
    use tower::ServiceExt;
    use yunjian_protocol::{Body, Envelope, Status};

    /// Every page route, one of each kind.
    const PAGES: [&str; 14] = [
        "/",
        "/racks",
        "/servers/h1",
        "/capacity",
        "/alarms",
        "/register",
        "/antivirus",
        "/reclaim",
        "/reclaim/1",
        "/applications",
        "/applications/1",
        "/audit",
        "/users",
        "/account",
    ];

    async fn get(
        app: &axum::Router,
        bearer: Option<&str>,
        uri: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req = Request::get(uri);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(HttpBody::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    /// The names of the `/assets/` a page links to (`src="/assets/…"`, `href="/assets/…"`).
    fn linked_assets(html: &str) -> Vec<String> {
        html.split("=\"/assets/")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn every_page_has_the_policy_and_every_asset_it_links_loads() {
        let mut fleet = Fleet::new();
        let now = crate::ratelimit::now_ms();
        fleet.apply(
            Envelope::new("h1", 0, now, Body::Status(Status::Online)),
            now,
        );
        let (_tx, rx) = watch::channel(0);
        let state = AppState::new(
            Arc::new(RwLock::new(fleet)),
            Arc::new(Metrics::default()),
            rx,
        );
        // an auditor may see every page
        let ops = state.auth.test_bearer("audit-1", Role::Auditor, None);
        let app = router(state);
        for (_, href, _, _) in NAV {
            assert!(PAGES.contains(&href), "{href} is not tested");
        }
        let mut linked = BTreeSet::new();
        // the sign-in page, then every page as someone who may see them all
        for uri in std::iter::once("/login").chain(PAGES) {
            let (status, headers, html) = get(&app, Some(&ops), uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {html}");
            assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8", "{uri}");
            let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(!csp.contains("unsafe-inline"), "{uri}: {csp}");
            assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{uri}");
            assert_eq!(headers[REFERRER_POLICY], "no-referrer", "{uri}");
            assert_eq!(headers[X_FRAME_OPTIONS], "DENY", "{uri}");
            assert!(
                !html.contains("<script>") && !html.contains("<style"),
                "{uri}"
            );
            assert!(!html.contains("style=\""), "{uri}");
            let assets = linked_assets(&html);
            assert!(
                assets.iter().any(|a| a.ends_with(".css")),
                "{uri}: {assets:?}"
            );
            linked.extend(assets);
        }
        for name in &linked {
            // assets need no sign-in: the sign-in page uses them
            let (status, headers, body) = get(&app, None, &format!("/assets/{name}")).await;
            assert_eq!(status, StatusCode::OK, "{name}");
            let expected = if name.ends_with(".css") {
                "text/css; charset=utf-8"
            } else {
                "text/javascript; charset=utf-8"
            };
            assert_eq!(headers[CONTENT_TYPE], expected, "{name}");
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff", "{name}");
            assert_eq!(headers[CACHE_CONTROL], "public, max-age=300", "{name}");
            assert!(!body.is_empty(), "{name}");
        }
        // every asset file is used by some page
        assert_eq!(
            linked.len(),
            super::super::assets::ASSETS.len(),
            "{linked:?}"
        );
        let (status, _, body) = get(&app, None, "/assets/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "没有这个静态资源");
    }

    #[test]
    fn the_nav_marks_only_the_current_page_and_shows_what_the_role_may_see() {
        let items = nav("capacity", Some(Role::Auditor));
        assert_eq!(items.len(), NAV.len());
        let current: Vec<_> = items.iter().filter(|i| i.current).map(|i| i.href).collect();
        assert_eq!(current, ["/capacity"]);
        assert!(nav("server", Some(Role::Ops)).iter().all(|i| !i.current));
        let unit: Vec<_> = nav("", Some(Role::Unit)).iter().map(|i| i.href).collect();
        assert_eq!(
            unit,
            [
                "/",
                "/alarms",
                "/register",
                "/antivirus",
                "/applications",
                "/reclaim"
            ]
        );
        assert!(nav("", None).is_empty(), "nothing before sign-in");
    }

    #[test]
    fn text_is_escaped_and_links_stay_readable() {
        assert_eq!(
            escape("<b>\"x\" & 'y'"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
        let html = ENV
            .get_template("hardware.html")
            .unwrap()
            .render(context! {
                nav => Value::from(Serde(nav("racks", Some(Role::Ops)))),
                title => "<script>",
                subtitle => "a & b",
            })
            .unwrap();
        assert!(
            html.contains("<title>云鉴 · &lt;script&gt;</title>"),
            "{html}"
        );
        assert!(html.contains(">a &amp; b</span>"), "{html}");
        assert!(
            html.contains("<a href=\"/racks\" aria-current=\"page\">机柜</a>"),
            "{html}"
        );
    }

    /// Under each profile the pages that cite a clause cite that profile's document, by its one
    /// title, and no other region's.
    #[test]
    fn pages_cite_the_active_profiles_document_only() {
        use yunjian_aggregator_core::policy::profile::BUILTIN;
        use yunjian_aggregator_core::policy::Profile;
        let all: Vec<Profile> = BUILTIN
            .iter()
            .map(|(n, _)| Profile::load(n).unwrap())
            .collect();
        for p in &all {
            let ops = context! { name => "ops", role => "ops" };
            for name in [
                "dashboard.html",
                "register.html",
                "antivirus.html",
                "reclaim.html",
            ] {
                let html = ENV
                    .get_template(name)
                    .unwrap()
                    .render(context! {
                        nav => Value::from(Serde(nav("dashboard", Some(Role::Ops)))),
                        policy => policy(p),
                        user => ops.clone(),
                    })
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
                for other in all.iter().filter(|o| o.name != p.name) {
                    assert!(
                        !html.contains(&other.title),
                        "{name} under {} names {}",
                        p.name,
                        other.title
                    );
                }
                let own = match name {
                    "dashboard.html" => escape(&format!("《{}》{}", p.title, {
                        let c = &p.clauses.capacity;
                        c.strip_prefix(&format!("{} ", p.name)).unwrap_or(c)
                    })),
                    "antivirus.html" | "reclaim.html" => escape(&format!("《{}》", p.title)),
                    _ => escape(p.register.form.zh()),
                };
                assert!(html.contains(&own), "{name} under {}: no {own}", p.name);
            }
        }
    }

    #[test]
    fn every_page_template_renders_on_the_layout() {
        for (name, _) in TEMPLATES.iter().filter(|(n, _)| *n != "base.html") {
            let html = ENV
                .get_template(name)
                .unwrap()
                .render(context! {
                    nav => Value::from(Serde(nav("dashboard", Some(Role::Ops)))),
                    policy => policy(&yunjian_aggregator_core::policy::Profile::default()),
                })
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert!(
                html.starts_with("<!DOCTYPE html>\n<html lang=\"zh-CN\">"),
                "{name}"
            );
            assert!(html.contains("<h1>云鉴 · 政务云资源监管</h1>"), "{name}");
            assert!(
                !html.contains("<script>") && !html.contains("<style"),
                "{name}"
            );
            assert!(!html.contains("style="), "{name}");
        }
    }
}
