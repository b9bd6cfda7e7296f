//! The files of the page, compiled into the binary so the dashboard works with no network:
//! the page itself, its script and style, and uPlot (MIT, vendored from the npm package
//! `uplot` 1.6.32, `dist/uPlot.iife.min.js` and `dist/uPlot.min.css`, with its LICENSE).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The dashboard page (one page for every dashboard: the script reads the URL).
pub(super) const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");
/// The plain latest-values table.
pub(super) const LATEST_HTML: &str = include_str!("assets/latest.html");

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/dashboard.js"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/dashboard.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("assets/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("assets/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("assets/uPlot.LICENSE"),
    },
];

/// `GET /assets/{file}`.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                // Revalidated each load: the files change with the binary, not with time.
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            a.body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_bundled_files() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
        }
        assert!(DASHBOARD_HTML.contains("/assets/uPlot.iife.min.js"));
        assert!(!DASHBOARD_HTML.contains("https://"), "no CDN");
        let js = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!js.contains("https://"), "no CDN");
        let uplot = std::str::from_utf8(ASSETS[2].body).unwrap();
        assert!(uplot.contains("uPlot"));
    }
}
