//! A browser-less client of the web UI for tests: signs in through the form, keeps
//! the session cookie, and posts forms with the page's CSRF token.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};

const FORM: &str = "application/x-www-form-urlencoded";

pub struct WebClient {
    pub base: String,
    http: reqwest::Client,
    /// `name=value` of the session cookie.
    pub session: Option<String>,
    /// The session's CSRF token, as pages carry it (`data-csrf`).
    pub csrf: String,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

fn cookie_pair(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .find(|kv| kv.starts_with(&format!("{name}=")))
}

/// The value of `attr="…"` on the first element that has it.
pub fn attr(html: &str, attr: &str) -> Option<String> {
    let needle = format!("{attr}=\"");
    let i = html.find(&needle)? + needle.len();
    let j = html[i..].find('"')? + i;
    Some(html[i..j].to_string())
}

impl WebClient {
    pub fn new(base: &str) -> WebClient {
        WebClient {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            session: None,
            csrf: String::new(),
        }
    }

    /// Signs in with an API key through the sign-in form.
    pub async fn sign_in(base: &str, api_key: &str) -> WebClient {
        let mut c = WebClient::new(base);
        let res = c.try_sign_in(api_key).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "sign-in: {}", res.body);
        assert!(c.session.is_some(), "sign-in set no session cookie");
        let home = c.get("/").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        c
    }

    /// Posts the sign-in form; keeps the session cookie when one is set.
    pub async fn try_sign_in(&mut self, api_key: &str) -> Page {
        let form = self
            .http
            .get(format!("{}/login", self.base))
            .send()
            .await
            .unwrap();
        let login_cookie =
            cookie_pair(&form, "hoist_login").expect("the sign-in form sets hoist_login");
        let html = form.text().await.unwrap();
        let nonce = html
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("the sign-in form has a _csrf field")
            .to_string();
        let res = self
            .http
            .post(format!("{}/login", self.base))
            .header(COOKIE, login_cookie)
            .header(CONTENT_TYPE, FORM)
            .body(
                serde_urlencoded::to_string([
                    ("_csrf", nonce.as_str()),
                    ("api_key", api_key),
                    ("next", "/"),
                ])
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        if let Some(s) = cookie_pair(&res, "hoist_session") {
            self.session = Some(s);
        }
        Self::page(res).await
    }

    async fn page(res: reqwest::Response) -> Page {
        let status = res.status();
        let headers = res.headers().clone();
        let location = res
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Page {
            status,
            location,
            headers,
            body: res.text().await.unwrap(),
        }
    }

    fn with_cookie(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.session {
            Some(c) => rb.header(COOKIE, c),
            None => rb,
        }
    }

    /// GETs a page; remembers its CSRF token.
    pub async fn get(&mut self, path: &str) -> Page {
        let res = self
            .with_cookie(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .unwrap();
        let p = Self::page(res).await;
        if let Some(t) = attr(&p.body, "data-csrf")
            && !t.is_empty()
        {
            self.csrf = t;
        }
        p
    }

    /// Posts a form with the session's CSRF token.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = vec![("_csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// Posts a form exactly as given (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let res = self
            .with_cookie(self.http.post(format!("{}{path}", self.base)))
            .header(CONTENT_TYPE, FORM)
            .body(serde_urlencoded::to_string(fields).unwrap())
            .send()
            .await
            .unwrap();
        Self::page(res).await
    }

    /// Posts JSON with the CSRF header (as `hoist.js` does).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Page {
        let res = self
            .with_cookie(self.http.post(format!("{}{path}", self.base)))
            .header("x-csrf-token", &self.csrf)
            .json(body)
            .send()
            .await
            .unwrap();
        Self::page(res).await
    }
}
