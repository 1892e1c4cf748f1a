//! The mio runtime (not built yet).
