//! Projection workers (see ARCHITECTURE.md).
