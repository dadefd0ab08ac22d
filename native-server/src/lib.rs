//! The wsrelay server.
