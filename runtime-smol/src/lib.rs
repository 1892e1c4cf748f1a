//! The smol runtime (not built yet).
