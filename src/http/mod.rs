//! HTTP/1.1 without sockets: request heads ([`request`]), response heads for the OTLP
//! exporter ([`client`]), query strings ([`query`]),
//! responses ([`response`]), routing ([`routes`]), the dead-letter queue's endpoints
//! ([`dlq`]), recent spans ([`spans`]), the connection list ([`connections`]) and the per-connection state machine ([`session`]) that the I/O layer feeds
//! with bytes and time.

pub mod client;
pub mod connections;
pub mod dlq;
pub mod query;
pub mod request;
pub mod response;
pub mod routes;
pub mod session;
pub mod spans;
pub mod sse;
