//! Notifications without IO (being written).
