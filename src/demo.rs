//! The self-contained demo (`ringlb demo`).
