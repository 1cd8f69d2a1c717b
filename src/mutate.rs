//! Pure admission decisions: an admission request, the settings and the facts the
//! I/O layer looked up go in; a JSON Patch comes out. No I/O.

pub mod secrets;
