//! MRT reader (RFC 6396).
