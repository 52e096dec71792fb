//! Routing on the worker: each client protocol presents a request to the pinned epoch's route
//! table (`fulcrum_model::RouteTable`) from what it already parsed, before the attempt loop,
//! so every HTTP/1.1 request, HTTP/2 stream and gRPC call picks its own pool. Nothing here
//! allocates; a table without routes is one branch.
//!
//! The TLS SNI name rides along for hosts the request does not name (`sni`: `None` on
//! cleartext connections; a TLS transport passes the ClientHello's server name).

use fulcrum_http::grpc::is_grpc_content_type;
use fulcrum_http::h1::RequestHead;
use fulcrum_model::{RequestFields, RouteRequest, RouteTable, Routed};
use http::HeaderMap;
use http::header::HOST;

/// Routes an HTTP/1.1 request by its parsed head.
#[inline]
pub(crate) fn h1(routes: &RouteTable, head: &RequestHead<'_>, sni: Option<&str>) -> Routed {
    if routes.is_empty() {
        return Routed::FALLBACK;
    }
    let request = RouteRequest::from_target(head.target.as_bytes(), head.host, sni);
    routes.route(&request, &H1Fields(head.headers))
}

/// Routes an HTTP/2 request (a gRPC call or not) by its pseudo-headers and fields.
#[inline]
pub(crate) fn h2(
    routes: &RouteTable,
    parts: &http::request::Parts,
    grpc: bool,
    sni: Option<&str>,
) -> Routed {
    if routes.is_empty() {
        return Routed::FALLBACK;
    }
    let authority = match parts.uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => parts.headers.get(HOST).map(|v| v.as_bytes()),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let request = RouteRequest { authority, sni, path: path.as_bytes() };
    routes.route(&request, &H2Fields { headers: &parts.headers, grpc })
}

/// Routes an HTTP/2 request of the native engine by its pseudo-header fields and fields.
#[inline]
pub(crate) fn h2_native(
    routes: &RouteTable,
    head: &crate::h2conn::fields::Fields,
    grpc: bool,
    sni: Option<&str>,
) -> Routed {
    use fulcrum_h2::hpack::Pseudo;
    if routes.is_empty() {
        return Routed::FALLBACK;
    }
    let authority = head.pseudo(Pseudo::Authority).or_else(|| head.get(b"host"));
    let path = head.pseudo(Pseudo::Path).unwrap_or(b"/");
    let request = RouteRequest { authority, sni, path };
    routes.route(&request, &crate::h2conn::fields::RouteFields { fields: head, grpc })
}

/// An HTTP/1.1 head's fields.
struct H1Fields<'h>(&'h [httparse::Header<'h>]);

impl RequestFields for H1Fields<'_> {
    fn is_grpc(&self) -> bool {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .is_some_and(|h| is_grpc_content_type(h.value.trim_ascii()))
    }

    fn has(&self, name: &str, value: &[u8]) -> bool {
        self.0.iter().any(|h| h.name.eq_ignore_ascii_case(name) && h.value.trim_ascii() == value)
    }
}

/// An HTTP/2 request's fields (names are lowercase on the wire).
struct H2Fields<'h> {
    headers: &'h HeaderMap,
    grpc: bool,
}

impl RequestFields for H2Fields<'_> {
    fn is_grpc(&self) -> bool {
        self.grpc
    }

    fn has(&self, name: &str, value: &[u8]) -> bool {
        self.headers.get_all(name).iter().any(|v| v.as_bytes().trim_ascii() == value)
    }
}
