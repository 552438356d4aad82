//! Static files of the UI, compiled into the binary and served under a name that
//! holds their content hash (`/assets/hoist.3f2a….css`), so browsers may keep them
//! forever: a new build has new names.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::not_found_page;

struct Asset {
    /// `hoist.css`
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "hoist.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/hoist.css"),
    },
    Asset {
        name: "hoist.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/hoist.js"),
    },
    Asset {
        name: "launch.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/launch.js"),
    },
    Asset {
        name: "queue-form.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/queue-form.js"),
    },
    Asset {
        name: "logs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/logs.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// `(hashed file name, asset)` for every asset, computed once.
fn hashed() -> &'static [(String, &'static Asset)] {
    static NAMES: OnceLock<Vec<(String, &'static Asset)>> = OnceLock::new();
    NAMES.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = hex::encode(&Sha256::digest(a.body)[..6]);
                let (stem, ext) = a.name.rsplit_once('.').expect("assets have extensions");
                (format!("{stem}.{digest}.{ext}"), a)
            })
            .collect()
    })
}

/// The URL of an asset by its plain name (`hoist.css` → `/assets/hoist.<hash>.css`).
pub fn url(name: &str) -> String {
    hashed()
        .iter()
        .find(|(_, a)| a.name == name)
        .map(|(h, _)| format!("/assets/{h}"))
        .unwrap_or_else(|| panic!("no asset {name:?} in web::assets::ASSETS"))
}

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, a)) = hashed().iter().find(|(h, _)| *h == file) else {
        return not_found_page().await;
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        a.body,
    )
        .into_response()
}
