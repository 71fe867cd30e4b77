//! SMTP text shared by inbound and outbound: replies and the reply table.

pub mod reply;

pub use reply::Reply;
