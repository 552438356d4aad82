//! The web UI without a browser: sessions, CSRF, access, headers, safe rendering.
//! (`crates/hoist/tests/web_ui.rs` drives the same pages in Chromium.)

mod common;

use common::TestServer;
use common::web::WebClient;
use reqwest::StatusCode;

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it() {
    let ts = TestServer::start().await;
    let mut anon = WebClient::new(&ts.url);
    let p = anon.get("/?tab=x").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/login?next=/%3Ftab%3Dx"));

    let mut c = WebClient::new(&ts.url);
    let res = c.try_sign_in(&ts.admin_key).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let set: Vec<_> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set
        .iter()
        .find(|v| v.starts_with("hoist_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "no TLS here: {session}");
    assert!(
        !session.contains(&ts.admin_key),
        "the cookie is not the API key"
    );

    let home = c.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.body.contains("id=\"signed-in-as\">admin"),
        "{}",
        home.body
    );
    let csp = home
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // Sign-out needs the CSRF token too.
    let refused = c.post_raw("/logout", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get("/").await.status,
        StatusCode::OK,
        "a refused sign-out leaves the session"
    );
    let out = c.post_form("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = c.get("/").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn bad_keys_and_run_tokens_do_not_sign_in() {
    let ts = TestServer::start().await;
    let mut wrong = ts.admin_key.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    for (key, says) in [
        ("", "not an API key"),
        ("hk_nope_nope", "not an API key"),
        (wrong.as_str(), "not valid"),
        (
            "hrt_abcdefghjkmn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "run token cannot sign in",
        ),
        ("<script>alert(1)</script>", "not an API key"),
    ] {
        let mut c = WebClient::new(&ts.url);
        let p = c.try_sign_in(key).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{key}: {}", p.body);
        assert!(p.body.contains(says), "{key}: {}", p.body);
        assert!(
            !p.body.contains("<script>alert"),
            "input is never echoed as HTML"
        );
        assert!(c.session.is_none());
    }
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions() {
    let ts = TestServer::start().await;
    let bob = ts.user("bob").await;
    let key = bob
        .create_key(&hoist_core::api::CreateApiKey {
            name: "web".into(),
            user: None,
        })
        .await
        .unwrap();
    let mut c = WebClient::sign_in(&ts.url, key.secret.expose()).await;
    bob.revoke_key(&key.key.id).await.unwrap();
    assert_eq!(c.get("/").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_without_its_form_token_is_refused() {
    let ts = TestServer::start().await;
    let c = WebClient::new(&ts.url);
    let p = c.post_raw("/login", &[("api_key", &ts.admin_key)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(p.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn unknown_pages_are_html_and_unknown_api_paths_json() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = c.get("/no/such/page").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("<!doctype html>"));
    let api = c.get("/api/v1/nothing").await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert!(api.body.starts_with('{'), "{}", api.body);
}

#[tokio::test]
async fn assets_are_served_by_content_hash_and_cached() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let home = c.get("/").await;
    let css = common::web::attr(&home.body, "href")
        .filter(|h| h.starts_with("/assets/"))
        .expect("stylesheet link");
    let p = c.get(&css).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.headers
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(
        c.get("/assets/hoist.css").await.status,
        StatusCode::NOT_FOUND,
        "only hashed names"
    );
}
